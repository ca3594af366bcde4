"""Site pages: home, pricing and the public status page, and the liveness and
readiness checks."""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET
from django_ratelimit.core import is_ratelimited

from billing.selectors import packs_for_sale
from billing.stripe_api import payments_enabled
from catalog.availability import live_workers
from generation.estimates import status_snapshot, wait_label
from generation.selectors import checkpoints_priced
from portal.celery import app as celery_app

log = logging.getLogger(__name__)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/home.html")


@require_GET
def pricing(request: HttpRequest) -> HttpResponse:
    """Credit packs, and what a picture costs on each model."""
    context = {"packs": packs_for_sale(), "payments_enabled": payments_enabled(), "checkpoints": checkpoints_priced()}
    return render(request, "portal/pricing.html", context)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: the process answers and the database too."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_redis() -> str:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _check_broker() -> str:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=1)
    return "ok"


def _check_workers() -> str:
    serving = [beat for beat in live_workers() if beat.get("serves")]
    if not serving:
        raise LookupError("no worker that serves a model has a live heartbeat")
    return f"ok ({len(serving)} live)"


READY_CHECKS = {"database": _check_database, "redis": _check_redis, "broker": _check_broker, "workers": _check_workers}


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: every dependency a job needs, each named with its result;
    503 when one fails. Each check is bounded by a short timeout."""
    checks, ok = {}, True
    for name, check in READY_CHECKS.items():
        started = time.monotonic()
        try:
            result = check()
        except Exception as exc:  # any failure of a dependency is an answer here, not an error
            ok = False
            # The kind of failure only: a driver's message can name hosts and users.
            result = f"failed: {type(exc).__name__}"
            log.warning("readyz: the %s check failed: %s", name, exc)
        checks[name] = {"status": result, "ms": round((time.monotonic() - started) * 1000, 1)}
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


def _status_limited(request: HttpRequest) -> bool:
    return is_ratelimited(request, group="status", key="ip", rate=settings.STATUS_RATE_LIMIT, increment=True)


def _too_many() -> JsonResponse:
    error = {"code": "rate_limited", "message": "Too many status requests from this address; wait a minute."}
    return JsonResponse({"error": error}, status=429, headers={"Retry-After": "60"})


def _cacheable(response: HttpResponse) -> HttpResponse:
    # Shared caches may keep the figures as long as the portal does; never a 429.
    patch_cache_control(response, public=True, max_age=settings.STATUS_CACHE_SECONDS)
    return response


@require_GET
def status_page(request: HttpRequest) -> HttpResponse:
    """Every enabled model: online or not, its queue and the expected wait
    (generation.estimates)."""
    if _status_limited(request):
        return _too_many()
    snapshot = status_snapshot()
    models = [{**model, "wait_label": wait_label(model["expected_wait_seconds"])} for model in snapshot["models"]]
    context = {**snapshot, "models": models, "cache_seconds": settings.STATUS_CACHE_SECONDS}
    # Never cacheable by shared caches: the page's header is the visitor's own
    # (balance, staff links, a CSRF token in the chat form).
    return render(request, "portal/status.html", context)


@require_GET
def status_json(request: HttpRequest) -> JsonResponse:
    """The status page's figures for scripts; the shape is in docs/operator/monitoring.md."""
    if _status_limited(request):
        return _too_many()
    return _cacheable(JsonResponse(status_snapshot()))
