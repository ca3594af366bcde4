"""What the services' sections share: constants, the claim's update, a
job's announce and end, small checks."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q
from django.db.models.functions import Now
from django.utils import timezone
from django_ratelimit.core import is_ratelimited

from generation.errors import InvalidParams, TooManyJobs
from generation.events import job_announce
from generation.images import CleanImage, image_clean
from generation.models import Job
from generation.observe import job_event
from generation.webhooks import webhook_schedule

log = logging.getLogger("generation.services")  # one name for the sections, as before the split
Status = Job.Status

REAPER_LOCK = "portal:reaper-lock"
BATCH_POLL_SECONDS = 0.02
CLAIM_TRIES = 5  # queued jobs tried in turn when other workers win the race
WORKER_LOST = "The worker stopped while making your picture."
NO_PICTURE = "Text to image takes no picture; to start from one, use image to image (POST /api/v1/img2img)."
MASK_OR_EXPAND = "Send a mask (inpainting) or expand_left/right/top/bottom (outpainting), not both."
NO_MASK = "Send a mask (white = change) for inpainting, or expand_left/right/top/bottom for outpainting."
NO_CONTROL = "Choose a ControlNet (its slug; GET /api/v1/models lists those that fit each model)."
NO_CONTROL_IMAGE = "Send a control picture (or parent_job, whose first result is then the control picture)."
NO_PICTURE_STRENGTH = "A strength applies to a picture (image); without one every step runs: leave strength out."


# --- Internals ----------------------------------------------------------------------


def _claim_queued(job_id, worker: str) -> bool:
    """queued -> running for `worker`, if the job is still queued: the one
    conditional update that makes every claim happen once."""
    return bool(Job.objects.filter(id=job_id, status=Status.QUEUED).update(**_claim_fields(worker)))


def _claim_fields(worker: str) -> dict:
    now = timezone.now()
    return {
        "status": Status.RUNNING,
        "attempts": F("attempts") + 1,
        "worker": worker,
        "batch_size": 1,
        "started_at": now,
        "progress_step": 0,
        "lease_expires_at": _lease_end(),
    }


def _lease_end():
    """JOB_LEASE_SECONDS from now by the database's clock, which the reaper
    compares against too: hosts whose clocks disagree cannot reap live jobs."""
    return ExpressionWrapper(Now() + timedelta(seconds=settings.JOB_LEASE_SECONDS), output_field=DateTimeField())


def _check_active_jobs(user) -> None:
    if Job.objects.filter(user=user, status__in=Job.ACTIVE).count() >= settings.MAX_ACTIVE_JOBS:
        raise TooManyJobs(f"You have {settings.MAX_ACTIVE_JOBS} jobs waiting or running; wait for one to finish.")


def _started(job: Job, **fields) -> None:
    job_event("started", job, queue_wait_seconds=_seconds(job.created_at, job.started_at), **fields)


def _seconds(start, end) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def _owned(job: Job):
    """The job's row while this attempt still owns it."""
    return Job.objects.filter(Q(id=job.id) & Q(status=Status.RUNNING) & Q(attempts=job.attempts))


def _announce(job_id) -> None:
    """After the commit: tell the job's websocket subscribers its new state."""
    transaction.on_commit(lambda: job_announce(job_id))


def _ended(job: Job) -> None:
    """In the transaction that gave `job` its terminal state: announce it and
    schedule its webhook, both sent after the commit."""
    _announce(job.id)
    webhook_schedule(job=job)


def _submits_too_fast(user) -> bool:
    """Counts one submission against the person's SUBMIT_RATE_LIMIT."""
    return is_ratelimited(
        None, group="submit", key=lambda _group, _request: str(user.pk), rate=settings.SUBMIT_RATE_LIMIT, increment=True
    )


def _expired_message() -> str:
    return (
        f"This job's pictures were deleted {settings.RESULT_RETENTION_DAYS} days after it ended; "
        "upload the picture again."
    )


def _image_size(upload, *, field: str = "image") -> tuple[int, int]:
    clean = image_clean(upload, field=field)
    return clean.width, clean.height


def _first_result(parent: Job) -> CleanImage:
    if parent.expired_at is not None:
        raise InvalidParams({"parent_job": _expired_message()})
    image = parent.images.first()
    if image is None:
        raise InvalidParams({"parent_job": "That job has no result to use as input yet; upload an image."})
    try:
        with image.file.open("rb") as handle:
            return CleanImage(png=handle.read(), width=image.width, height=image.height)
    except FileNotFoundError:  # retention deleted it since the read
        raise InvalidParams({"parent_job": _expired_message()}) from None
