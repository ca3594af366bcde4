"""Generation work for the housekeeping worker (settings.HOUSEKEEPING_QUEUE): the
periodic tasks Celery beat schedules (portal/settings.py) and webhook
deliveries. Torch-free: any worker process can run it. Every worker process
also runs the reaper from a thread of its own (workers/heartbeat.py:
Reaper), so the reaper does not depend on beat: reap_jobs is a second line.
Expired idempotency keys are ignored when met, and purged here."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from catalog.availability import worker_name
from generation import services, webhooks
from generation.dispatch import DELIVER_WEBHOOK
from generation.idempotency import idempotency_keys_purge


@shared_task(name="generation.reap_jobs")
def reap_jobs() -> dict:
    return services.jobs_reap_if_due(owner=worker_name()) or {"skipped": 1}


@shared_task(name="generation.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    return idempotency_keys_purge()


# One attempt, DNS to the last byte read, ends within its time limit (urllib3's
# timeout bounds connect and each read, not a receiver that drips bytes); an
# attempt cut short counts as failed (webhooks.webhook_deliver), well before
# its claim on the delivery runs out (webhooks._claim_seconds).
@shared_task(
    name=DELIVER_WEBHOOK,
    ignore_result=True,
    soft_time_limit=settings.WEBHOOK_TIMEOUT + 5,
    time_limit=settings.WEBHOOK_TIMEOUT + 15,
)
def deliver_webhook(delivery_id: int, attempt: int) -> str:
    return webhooks.webhook_deliver(delivery_id=delivery_id, attempt=attempt)


@shared_task(name="generation.send_due_webhooks", ignore_result=True)
def send_due_webhooks() -> int:
    return webhooks.webhooks_send_due()


@shared_task(name="generation.expire_results", ignore_result=True)
def expire_results() -> int:
    return services.results_expire()
