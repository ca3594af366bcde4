"""Redis (the cache, the rate-limit counters, worker heartbeats, the channel
layer and the Celery broker) being unreachable is an outage, not a bug: the
API answers 503 in its error shape and pages a short 503 page, never a 500."""

from __future__ import annotations

import logging

import kombu.exceptions
import redis.exceptions
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

log = logging.getLogger(__name__)

# What redis-py (cache, heartbeats, channels-redis) and kombu (publishing a
# task) raise when the server cannot be reached or does not answer in time.
BROKER_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError)
RETRY_AFTER_SECONDS = 30
MESSAGE = "The service is briefly unavailable. Try again in a minute."


def outage_response(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.error("broker unavailable during %s %s: %r", request.method, request.path, exc)
    if request.path.startswith("/api/") or "text/html" not in request.headers.get("Accept", ""):
        response = JsonResponse({"error": {"code": "service_unavailable", "message": MESSAGE}}, status=503)
    else:
        response = HttpResponse(render_to_string("503.html", {"message": MESSAGE}), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class BrokerOutageMiddleware:
    """A view that fails because Redis is unreachable answers 503."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        return outage_response(request, exc) if isinstance(exc, BROKER_ERRORS) else None
