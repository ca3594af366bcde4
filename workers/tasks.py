"""Celery tasks. Thin: each takes ids, calls a service, returns plain data.

torch is never imported at module level here, so the web tier can import
this module to send tasks without it.
"""

from __future__ import annotations

import os
import socket

from celery import shared_task

from workers import boot  # noqa: F401  (connects the worker start-up signals)


@shared_task(name="workers.ping")
def ping() -> dict:
    """A round trip through the broker: which worker answered."""
    return {"pong": True, "host": socket.gethostname(), "pid": os.getpid()}


@shared_task(name="workers.test_load", acks_late=True)
def test_load(run_id: int) -> str:
    from workers.services import checkpoint_test_run

    return checkpoint_test_run(run_id=run_id)


@shared_task(name="workers.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> str:
    from workers.services import job_run

    return job_run(job_id=job_id)


@shared_task(name="workers.reap_jobs")
def reap_jobs() -> dict:
    from generation.services import jobs_reap

    return jobs_reap()


@shared_task(name="workers.remind_unread_support")
def remind_unread_support() -> int:
    from portal.support import remind_unread

    return remind_unread()
