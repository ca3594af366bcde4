"""Structured logs: every line of the web and the workers is one JSON object
(LOG_FORMAT=json) or one readable console line (LOG_FORMAT=console, the
default with DEBUG on). structlog renders both structlog events and the
standard library's records (Django, Celery, our `logging.getLogger(__name__)`
calls) through one ProcessorFormatter, so an exception is a field of its line,
never a multi-line traceback.

Requests: django-structlog's RequestMiddleware binds a request id (and the
user id) to every line logged while the request runs, and to the Celery
tasks sent during it (DJANGO_STRUCTLOG_CELERY_ENABLED; the worker side is in
portal.celery). One line per request: its `request_finished` (or
`request_failed`) carries the fields below, `request_started` is logged at
DEBUG, and the answer carries the id back in `X-Request-ID`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

import structlog
from django.dispatch import receiver
from django_structlog import signals
from django_structlog.app_settings import app_settings

REQUEST_ID_HEADER = "X-Request-ID"
# An id taken from the client or the proxy (LOG_TRUST_REQUEST_ID) must look
# like one: anything else gets a fresh id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def structlog_configure() -> None:
    """structlog hands its events to the standard library's logging, whose
    handlers (LOGGING) render them: one place decides the format."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def json_formatter() -> logging.Formatter:
    """One JSON object per line; a traceback becomes the `exception` field."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def console_formatter() -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
    )


def logging_config(*, fmt: str, level: str) -> dict:
    """The LOGGING dict: one handler on stderr, formatted as `fmt` (json or
    console), for everything."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": json_formatter},
            "console": {"()": console_formatter},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": fmt}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # django-structlog's request line says the same (status, and the
            # traceback of a request that failed): one line per request.
            "django.request": {"level": "CRITICAL"},
            "django.server": {"level": "WARNING"},
            # uvicorn configures its own loggers before Django starts: route
            # them here, and drop its access line (request_finished is it).
            "uvicorn": {"handlers": ["console"], "propagate": False},
            "uvicorn.error": {"handlers": ["console"], "propagate": False},
            "uvicorn.access": {"handlers": ["console"], "propagate": False, "level": "WARNING"},
        },
    }


# --- The request line -------------------------------------------------------------


@receiver(signals.bind_extra_request_metadata)
def _request_started(request, logger, log_kwargs, **kwargs) -> None:
    request._log_started = time.monotonic()
    if app_settings.TRUST_UPSTREAM_REQUEST_ID:
        bound = structlog.contextvars.get_contextvars().get("request_id", "")
        if not _REQUEST_ID.fullmatch(bound):
            structlog.contextvars.bind_contextvars(request_id=str(uuid.uuid4()))
    # The address after portal.middleware.ClientIpMiddleware (TRUSTED_PROXIES),
    # not one that any client can claim in X-Forwarded-For.
    structlog.contextvars.bind_contextvars(ip=request.META.get("REMOTE_ADDR"))
    log_kwargs.pop("request", None)  # "GET /path?query": the query may hold a secret


@receiver(signals.bind_extra_request_finished_metadata)
def _request_finished(request, logger, response, log_kwargs, **kwargs) -> None:
    log_kwargs.pop("request", None)  # "GET /path?query": the query may hold a secret
    match = getattr(request, "resolver_match", None)
    log_kwargs.update(
        method=request.method,
        path=_loggable_path(request),
        route=match.route if match else None,
        view=match.view_name if match else None,
        status=log_kwargs.pop("code"),
    )
    _add_duration(request, log_kwargs)
    _answer_request_id(response)


@receiver(signals.bind_extra_request_failed_metadata)
def _request_failed(request, logger, exception, log_kwargs, **kwargs) -> None:
    log_kwargs.pop("request", None)
    log_kwargs.update(method=request.method, path=_loggable_path(request), status=log_kwargs.pop("code"))
    _add_duration(request, log_kwargs)


@receiver(signals.update_failure_response)
def _failure_response(request, response, logger, exception, **kwargs) -> None:
    _answer_request_id(response)


# Path parts that are secrets: allauth's password-reset and e-mail
# confirmation keys (/accounts/password/reset/key/<uidb36>-<key>/,
# /accounts/confirm-email/<key>/). Logged as "[secret]".
SECRET_PATH_KWARGS = ("key", "token")


def _loggable_path(request) -> str:
    path = request.path
    match = getattr(request, "resolver_match", None)
    for name, value in match.kwargs.items() if match else ():
        if name in SECRET_PATH_KWARGS and value:
            path = path.replace(str(value), "[secret]")
    return path


def _add_duration(request, log_kwargs: dict) -> None:
    started = getattr(request, "_log_started", None)
    if started is not None:
        log_kwargs["duration_ms"] = round((time.monotonic() - started) * 1000, 1)


def _answer_request_id(response) -> None:
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        response[REQUEST_ID_HEADER] = request_id
