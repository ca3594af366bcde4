"""The GPU worker's Celery tasks. Thin: each takes ids and calls a service.
generation sends them by name (generation.dispatch), never by import."""

from __future__ import annotations

import os
import socket

from celery import shared_task

from generation.dispatch import RUN_JOB, TEST_LOAD, slug_of_queue
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
def run_job(self, job_id: str) -> str:
    # The queue names the checkpoint (ckpt.<slug>): the turn it stands for
    # serves that checkpoint's queue even if the message's own job is gone.
    queue = (self.request.delivery_info or {}).get("routing_key") or ""
    return services.job_run(job_id=job_id, slug=slug_of_queue(queue))
