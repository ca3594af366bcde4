"""How generation hands work to the workers: by Celery task name, on the
queue of the checkpoint. generation never imports workers/; the worker's
tasks are registered under these names (workers/tasks.py).

Every job message sent is remembered by a marker key in the broker's Redis
until a worker takes the message (`job_received`). A queued job without a
marker has no message any more (a Redis restart without persistence, a
publish that failed after its commit), and `jobs_unsent` finds it so the
sweep in generation.services sends it again. A duplicate message is
harmless: a job is claimed by one conditional update.
"""

from __future__ import annotations

from celery import current_app
from django.conf import settings

from generation.availability import heartbeat_client

RUN_JOB = "workers.run_job"
TEST_LOAD = "workers.test_load"
SENT_PREFIX = "portal:job-sent:"


def queue_for(slug: str) -> str:
    """The Celery queue of one checkpoint: workers consume only what they serve."""
    return f"ckpt.{slug}"


def job_dispatch(*, job_id, slug: str) -> None:
    """Send a job (its id, never the row) to its checkpoint's workers, then
    mark it sent. Raises when the broker cannot be reached; the job stays
    queued and unmarked, and the sweep sends it later."""
    current_app.send_task(RUN_JOB, args=[str(job_id)], queue=queue_for(slug))
    heartbeat_client().set(SENT_PREFIX + str(job_id), "1", ex=settings.JOB_QUEUE_TIMEOUT + 60)


def job_received(job_id) -> None:
    """A worker took the job's message: from here on the job's lease, not
    the broker, keeps it alive."""
    heartbeat_client().delete(SENT_PREFIX + str(job_id))


def jobs_unsent(job_ids: list) -> list:
    """The ids among `job_ids` whose message is not known to be in the broker."""
    if not job_ids:
        return []
    marks = heartbeat_client().mget([SENT_PREFIX + str(job_id) for job_id in job_ids])
    return [job_id for job_id, mark in zip(job_ids, marks, strict=True) if mark is None]


def test_run_dispatch(*, run_id: int, slug: str) -> None:
    current_app.send_task(TEST_LOAD, args=[run_id], queue=queue_for(slug))
