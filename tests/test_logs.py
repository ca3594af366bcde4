"""Structured logs: one JSON line per request with its request id (answered
back in X-Request-ID), every stdlib line as one JSON object, and a job's
events (generation.observe) followed by its id from submit to charge."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
import structlog
from celery.signals import before_task_publish

from catalog.availability import heartbeat_client
from catalog.queues import queue_for
from generation.dispatch import job_dispatch
from generation.observe import MESSAGE_JOB, job_event
from portal.logs import json_formatter
from tests.helpers import job_run_here


def rendered(record: logging.LogRecord) -> dict:
    """The record as the production handler writes it: exactly one JSON line."""
    line = json_formatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def job_lines(caplog, job_id) -> list[dict]:
    lines = [rendered(r) for r in caplog.records if r.name == "generation.jobs"]
    return [line for line in lines if line["job_id"] == str(job_id)]


@pytest.mark.django_db
def test_a_request_is_one_json_line_whose_id_is_answered_back(client, caplog):
    with caplog.at_level(logging.INFO):
        response = client.get("/healthz?token=secret")

    [record] = [r for r in caplog.records if r.name.startswith("django_structlog")]
    line = rendered(record)
    assert line["event"] == "request_finished"
    assert line["request_id"] == response["X-Request-ID"]
    uuid.UUID(line["request_id"])  # a fresh one: incoming ids are not trusted by default
    assert (line["method"], line["path"], line["status"], line["view"]) == ("GET", "/healthz", 200, "healthz")
    assert line["duration_ms"] >= 0
    assert "secret" not in json.dumps(line)  # the query string is left out
    assert line["level"] == "info" and line["logger"] == "django_structlog.middlewares.request"


@pytest.mark.django_db
def test_keys_in_a_path_are_never_logged(client, caplog):
    key = "MQ:1tSecretConfirmationKeyXYZ"
    with caplog.at_level(logging.DEBUG):
        client.get(f"/accounts/confirm-email/{key}/")
    lines = [rendered(r) for r in caplog.records if r.name.startswith("django_structlog")]
    assert lines and all(key not in json.dumps(line) for line in lines)
    finished = [line for line in lines if line["event"] == "request_finished"]
    assert finished[0]["path"] == "/accounts/confirm-email/[secret]/"


@pytest.mark.django_db
def test_an_incoming_request_id_is_kept_when_trusted_and_well_formed(client, settings):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="edge-42")["X-Request-ID"] != "edge-42"

    settings.DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = True
    assert client.get("/healthz", HTTP_X_REQUEST_ID="edge-42")["X-Request-ID"] == "edge-42"
    replaced = client.get("/healthz", HTTP_X_REQUEST_ID='no"t one')["X-Request-ID"]
    uuid.UUID(replaced)


def test_a_stdlib_line_is_one_json_object_with_level_logger_and_exception():
    record = logging.LogRecord("generation.services", logging.WARNING, __file__, 1, "job %s: %s", ("j1", "x"), None)
    line = rendered(record)
    assert (line["event"], line["level"], line["logger"]) == ("job j1: x", "warning", "generation.services")
    assert line["timestamp"].endswith("Z")

    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        failed = logging.LogRecord("workers.services", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = rendered(failed)
    assert "Traceback" in line["exception"] and "ValueError: bad\nthing" in line["exception"]


@pytest.mark.django_db
def test_a_job_is_followed_by_its_id_from_submit_to_charge(paid_api, alice, gpu_worker, caplog):
    """The web's submit line (with the request id) and the worker's lines
    (run here in-process, as the worker's task would: django_db never
    commits, so no message is sent to the session worker)."""

    with caplog.at_level(logging.INFO):
        response = job_run_here(paid_api)
    job_id = response.json()["id"]

    [request_line] = [rendered(r) for r in caplog.records if r.name.startswith("django_structlog")]
    assert request_line["request_id"] == response["X-Request-ID"] and request_line["user_id"] == alice.pk
    assert (request_line["route"], request_line["status"]) == ("api/v1/img2img", 202)
    lines = {line["event"]: line for line in job_lines(caplog, job_id)}
    assert list(lines) == ["job.submitted", "job.started", "job.succeeded"]
    submitted, started, succeeded = lines.values()
    assert submitted["request_id"] == response["X-Request-ID"]
    held = response.json()["credits_held"]
    assert submitted["credits_held"] == held and submitted["model"] == "test-sd1"
    assert submitted["user_id"] == started["user_id"] == succeeded["user_id"]
    assert started["attempt"] == 1 and started["worker"] and started["queue_wait_seconds"] >= 0
    assert succeeded["credits_charged"] == held and succeeded["run_seconds"] > 0
    assert succeeded["level"] == "info" and succeeded["logger"] == "generation.jobs"
    # What the README's recipe greps for.
    assert f'"job_id": "{job_id}"' in json_formatter().format(
        next(r for r in caplog.records if r.name == "generation.jobs")
    )


def test_a_job_message_carries_the_request_id_only_of_its_own_job(caplog):
    """django-structlog copies the logging context into each message, and
    binds it in the worker's task: a worker that requeues another job than
    the one of the message it serves must not pass its request id on."""
    sent: list[dict] = []

    def capture(headers=None, **kwargs):
        sent.append(headers["__django_structlog__"])

    own, other, slug = uuid.uuid4(), uuid.uuid4(), f"logs-nowhere-{uuid.uuid4().hex[:6]}"
    before_task_publish.connect(capture)
    try:
        with caplog.at_level(logging.INFO), structlog.contextvars.bound_contextvars(request_id="r-1"):
            job_dispatch(job_id=own, slug=slug)  # the web's submit: no message job bound
            with structlog.contextvars.bound_contextvars(**{MESSAGE_JOB: str(own)}):
                job_dispatch(job_id=own, slug=slug, reason="retry")
                job_dispatch(job_id=other, slug=slug, reason="retry")
                job_event("started", other)
    finally:
        before_task_publish.disconnect(capture)
        heartbeat_client().delete(queue_for(slug))
    assert [context["request_id"] for context in sent] == ["r-1", "r-1", None]
    dispatched = [rendered(r) for r in caplog.records if r.name == "generation.jobs"]
    assert [(line["event"], line["reason"], line["request_id"]) for line in dispatched[:3]] == [
        ("job.dispatched", "submit", "r-1"),
        ("job.dispatched", "retry", "r-1"),
        ("job.dispatched", "retry", None),
    ]
    assert dispatched[3]["event"] == "job.started" and dispatched[3]["request_id"] is None


def test_workers_and_beat_log_like_the_web_at_celery_s_level():
    from portal.celery import _logging_setup

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        _logging_setup(loglevel=logging.WARNING)
        assert root.level == logging.WARNING
        ours = [h for h in root.handlers if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)]
        assert len(ours) == 1
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
