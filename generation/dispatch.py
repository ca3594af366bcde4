"""How generation hands work to the workers: by Celery task name, on the
queue of the checkpoint. generation never imports workers/; the worker's
tasks are registered under these names (workers/tasks.py)."""

from __future__ import annotations

from celery import current_app

RUN_JOB = "workers.run_job"
TEST_LOAD = "workers.test_load"


def queue_for(slug: str) -> str:
    """The Celery queue of one checkpoint: workers consume only what they serve."""
    return f"ckpt.{slug}"


def job_dispatch(*, job_id, slug: str, countdown: int = 0) -> None:
    """Send a job (its id, never the row) to its checkpoint's workers."""
    current_app.send_task(RUN_JOB, args=[str(job_id)], queue=queue_for(slug), countdown=countdown)


def test_run_dispatch(*, run_id: int, slug: str) -> None:
    current_app.send_task(TEST_LOAD, args=[run_id], queue=queue_for(slug))
