"""Every event of a job's life goes through job_event: one structured log
line `job.<event>` (on the web and on the workers alike), so a job can be
followed from submit to charge by its id, and counted in the metrics
(generation.metrics.job_observed: events by model, queue wait, run time).

The events, and the numbers each carries as keyword fields:

- submitted (web): credits_held, num_images, steps, width, height
- dispatched: a turn of the job's checkpoint sent to the broker; reason
  (submit, retry, resend: the reaper's sweep, send_back, forward), queue, hops
- started (worker): a worker claimed it; worker, attempt,
  queue_wait_seconds (since submit), taken_over_from when it took a dead
  worker's job, batch_of when it joined another job's pipeline call
- succeeded (worker): credits_charged (the hold captured), run_seconds
- requeued: an attempt failed and the job waits for another; error_code
- failed: credits_released, error_code (worker_lost, queue_timeout,
  moderated, time_limit, ...)
- canceled (web): credits_released
- expired: retention deleted its pictures

Every line has job_id, and user_id, model, credits_held, attempt and worker
when the caller has the job's row. The request id comes from the logging
context: the request that submitted or canceled it on the web; on a worker,
the request that sent the task's message, but only on the lines of the
message's own job (a turn may serve another job of its queue).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import structlog

from catalog.models import Checkpoint
from generation.metrics import job_observed
from generation.models import Job

logger = structlog.get_logger("generation.jobs")

# The job whose message a worker's task is serving (workers.tasks.run_job).
MESSAGE_JOB = "message_job_id"


def job_event(event: str, job, *, level: int = logging.INFO, **fields) -> None:
    """Log `job.<event>` for `job` (a Job, or only its id) with `fields`
    (numbers as numbers: credits, seconds)."""
    if isinstance(job, Job):
        job_id = job.id
        known = {
            "user_id": job.user_id,
            "credits_held": job.credits_held,
            "attempt": job.attempts,
            "worker": job.worker or None,
        }
        # The slug for the metrics' model label: from the loaded checkpoint,
        # else one query per checkpoint per process and minute.
        known["model"] = job.checkpoint.slug if Job.checkpoint.is_cached(job) else _slug_of(job.checkpoint_id)
        known["mode"] = job.mode
        fields = {**known, **fields}
    else:
        job_id = job
    if not _request_is_of(job_id):
        fields["request_id"] = None
    logger.log(level, f"job.{event}", job_id=str(job_id), **fields)
    job_observed(
        event,
        model=str(fields.get("model") or "unknown"),
        mode=str(fields.get("mode") or "unknown"),  # a dispatch names only the job's id
        # Once per job: its first start, and the run that gave its result.
        queue_wait_seconds=fields.get("queue_wait_seconds") if fields.get("attempt") == 1 else None,
        run_seconds=fields.get("run_seconds") if event == "succeeded" else None,
    )


_SLUGS: dict[int, tuple[str, float]] = {}
SLUG_TTL_SECONDS = 60  # staff may rename a checkpoint: labels follow within a minute


def _slug_of(checkpoint_id: int) -> str:
    cached = _SLUGS.get(checkpoint_id)
    if cached is None or time.monotonic() - cached[1] > SLUG_TTL_SECONDS:
        slug = Checkpoint.objects.filter(pk=checkpoint_id).values_list("slug", flat=True).first()
        if slug is None:
            return "unknown"
        cached = _SLUGS[checkpoint_id] = (slug, time.monotonic())
    return cached[0]


@contextlib.contextmanager
def job_context(job_id) -> Iterator[None]:
    """Around sending a message for `job_id`: the request id that goes with
    it (django-structlog copies the logging context into the message) is
    dropped when it is another job's (a worker requeueing a batch companion)."""
    if _request_is_of(job_id):
        yield
    else:
        with structlog.contextvars.bound_contextvars(request_id=None):
            yield


def _request_is_of(job_id) -> bool:
    """False when the bound request id belongs to another job: a worker's
    task serves the message of one job, and may run others."""
    message_job = structlog.contextvars.get_contextvars().get(MESSAGE_JOB)
    return message_job is None or message_job == str(job_id)
