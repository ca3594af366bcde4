"""GET /metrics: the Prometheus text format, for operators only.

Two sources in one answer:
- what the processes counted (generation.metrics: job events, queue waits
  and run times, reaper actions, webhook attempts; django-prometheus: HTTP
  requests and latency by route), summed over this web tier's processes
  when PROMETHEUS_MULTIPROC_DIR is set. Workers serve theirs on
  WORKER_METRICS_PORT.
- what the state is, read at scrape time from the database and Redis (this
  module's collector): jobs by state and model, queue depth and oldest wait
  per checkpoint, messages in the broker, workers online and what each has
  loaded, credits by movement and outstanding, webhook deliveries. Right
  whichever process changed it, and never lost to a restart.

Only with `Authorization: Bearer <METRICS_TOKEN>`; refused when the token is
unset (DESIGN.md).
"""

from __future__ import annotations

import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from billing.selectors import credit_totals, credits_outstanding, ledger_sums
from catalog.availability import heartbeat_client, live_workers
from generation.dispatch import queue_for
from generation.selectors import job_counts, queues_waiting, webhook_counts


class StateCollector:
    """Figures read at scrape time: a few grouped queries and Redis reads."""

    def collect(self):
        yield from self._jobs()
        yield from self._workers()
        yield from self._credits()
        webhooks = GaugeMetricFamily(
            "portal_webhook_deliveries", "Webhook deliveries by status (failed: gave up).", labels=["status"]
        )
        for status, count in sorted(webhook_counts().items()):
            webhooks.add_metric([status], count)
        yield webhooks

    def _jobs(self):
        jobs = GaugeMetricFamily("portal_jobs", "Jobs by state, model and mode.", labels=["state", "model", "mode"])
        for status, slug, mode, count in job_counts():
            jobs.add_metric([status, slug, mode], count)
        yield jobs
        depth = GaugeMetricFamily("portal_queue_depth", "Jobs queued per checkpoint.", labels=["model"])
        oldest = GaugeMetricFamily(
            "portal_queue_oldest_wait_seconds", "How long the oldest queued job has waited.", labels=["model"]
        )
        now = time.time()
        waiting = queues_waiting()
        for slug, (count, since) in sorted(waiting.items()):
            depth.add_metric([slug], count)
            oldest.add_metric([slug], max(0.0, now - since.timestamp()))
        yield depth
        yield oldest
        broker = GaugeMetricFamily(
            "portal_broker_queue_messages", "Messages waiting in each checkpoint's broker queue.", labels=["queue"]
        )
        client = heartbeat_client()  # the broker is this Redis too (CELERY_BROKER_URL = REDIS_URL)
        queues = [queue_for(slug) for slug in sorted(waiting)]
        if queues:
            pipe = client.pipeline(transaction=False)
            for queue in queues:
                pipe.llen(queue)
            for queue, length in zip(queues, pipe.execute(), strict=True):
                broker.add_metric([queue], length)
        yield broker

    def _workers(self):
        workers = live_workers()
        online = GaugeMetricFamily(
            "portal_workers_online", "Workers with a live heartbeat that serve a model (as /readyz and /status/ count)."
        )
        online.add_metric([], sum(1 for beat in workers if beat.get("serves")))
        yield online
        loaded = GaugeMetricFamily(
            "portal_worker_models_loaded", "Pipelines loaded per worker.", labels=["worker", "device"]
        )
        model = GaugeMetricFamily(
            "portal_worker_model_loaded", "1 for each checkpoint a worker has loaded.", labels=["worker", "model"]
        )
        busy = GaugeMetricFamily("portal_worker_busy", "1 while a worker takes a turn.", labels=["worker"])
        for beat in sorted(workers, key=lambda beat: beat.get("worker", "")):
            name = beat.get("worker", "")
            loaded.add_metric([name, beat.get("device", "")], len(beat.get("loaded", [])))
            for slug in beat.get("loaded", []):
                model.add_metric([name, slug], 1)
            busy.add_metric([name], 1 if beat.get("busy") else 0)
        yield loaded
        yield model
        yield busy

    def _credits(self):
        moved = CounterMetricFamily(
            "portal_credits", "Credits moved since the books began, by movement.", labels=["movement"]
        )
        sums = ledger_sums()  # read once for both families
        for movement, amount in credit_totals(sums).items():
            moved.add_metric([movement], amount)
        yield moved
        outstanding = credits_outstanding(sums)
        liability = GaugeMetricFamily(
            "portal_credits_liability", "Spendable credits people hold: the sum of all balances."
        )
        liability.add_metric([], outstanding["liability"])
        yield liability
        held = GaugeMetricFamily("portal_credits_held", "Credits on hold for jobs not yet ended.")
        held.add_metric([], outstanding["held"])
        yield held


_STATE = CollectorRegistry(auto_describe=False)
_STATE.register(StateCollector())


def process_metrics() -> bytes:
    """What this web tier's processes counted."""
    if settings.PROMETHEUS_MULTIPROC_DIR:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def _authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and constant_time_compare(given.strip(), token)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        return JsonResponse(
            {"error": {"code": "metrics_disabled", "message": "Metrics are off: METRICS_TOKEN is not set."}},
            status=404,
        )
    if not _authorized(request):
        response = JsonResponse(
            {"error": {"code": "unauthorized", "message": "Send Authorization: Bearer <METRICS_TOKEN>."}},
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body = process_metrics() + generate_latest(_STATE)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
