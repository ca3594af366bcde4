"""The GPU worker's Celery tasks. Thin: each takes ids and calls a service.
generation sends them by name (generation.dispatch), never by import."""

from __future__ import annotations

import os
import socket

import structlog
from celery import shared_task

from catalog.queues import TEST_LOAD, slug_of_queue
from generation.dispatch import RUN_JOB
from generation.observe import MESSAGE_JOB
from workers import (
    boot,  # noqa: F401  (connects the worker start-up signals)
    services,
)


@shared_task(name="workers.ping")
def ping() -> dict:
    """A round trip through the broker: which worker answered."""
    return {"pong": True, "host": socket.gethostname(), "pid": os.getpid()}


@shared_task(name=TEST_LOAD, acks_late=True)
def test_load(run_id: int) -> str:
    return services.checkpoint_test_run(run_id=run_id)


@shared_task(name=RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job(self, job_id: str, slug: str | None = None, hops: int = 0) -> str:
    # The turn serves checkpoint `slug` even if the message's own job is
    # gone; a message without it (sent before slugs were carried) came from
    # the checkpoint's queue, which names it (ckpt.<slug>). A message that
    # came through a queue not of a checkpoint was forwarded to this worker.
    queue = (self.request.delivery_info or {}).get("routing_key") or ""
    # The request id this message carries (django-structlog) is its own job's
    # submit: generation.observe puts it only on that job's lines.
    structlog.contextvars.bind_contextvars(**{MESSAGE_JOB: job_id})
    return services.job_run(
        job_id=job_id,
        slug=slug or slug_of_queue(queue),
        hops=hops,
        forwarded=slug_of_queue(queue) is None and hops > 0,
    )
