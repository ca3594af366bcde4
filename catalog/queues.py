"""The checkpoints' Celery queues: each checkpoint has its own, and a
worker consumes only those of the checkpoints it serves. Work is sent by
task name (the worker registers these names: workers/tasks.py)."""

from __future__ import annotations

from celery import current_app

QUEUE_PREFIX = "ckpt."
TEST_LOAD = "workers.test_load"


def queue_for(slug: str) -> str:
    """The Celery queue of one checkpoint: workers consume only what they serve."""
    return QUEUE_PREFIX + slug


def slug_of_queue(queue: str) -> str | None:
    """The checkpoint whose queue this is (queue_for's inverse), or None."""
    return queue.removeprefix(QUEUE_PREFIX) if queue.startswith(QUEUE_PREFIX) else None


def test_run_dispatch(*, run_id: int, slug: str) -> None:
    """A staff test load of checkpoint `slug`, for a worker that serves it."""
    current_app.send_task(TEST_LOAD, args=[run_id], queue=queue_for(slug))
