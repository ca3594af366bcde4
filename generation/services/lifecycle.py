"""A running job's life: progress, success (capture), failure (release or
requeue), refused pictures; and staff viewing a job."""

from __future__ import annotations

import logging
import math
import time
import uuid

from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.ledger import credits_capture, credits_release
from generation.dispatch import (
    job_dispatch,
    job_stop_requested,
)
from generation.events import job_send
from generation.images import png_encode
from generation.models import Job, JobImage
from generation.moderation import FLAGGED_IMAGE, image_flags_record
from generation.observe import job_event
from generation.services._common import (
    Status,
    _announce,
    _ended,
    _lease_end,
    _owned,
    _seconds,
)
from generation.status_cache import status_progress


def job_progress(*, job: Job, step: int | None = None, total: int | None = None) -> bool:
    """Record progress and extend the lease. A step goes to the job's
    websocket at once (the job's Redis channel carries every step); the row is
    written at most every JOB_PROGRESS_WRITE_SECONDS, and on every lease
    renewal (step None, from the heartbeat) with the last step seen, so a
    step costs no database round trip. False when this attempt no longer
    owns the job (canceled, or reaped), found at the next write, or at once
    after a cancel's stop signal (job_stop_request): the worker should stop."""
    now = time.monotonic()
    if step is not None and step >= job.progress_step:  # a step served late never takes one back
        job.progress_step, job.progress_total = step, total
        if now - getattr(job, "_progress_written", -math.inf) < settings.JOB_PROGRESS_WRITE_SECONDS and not (
            _stop_check_due(job, now) and job_stop_requested(job.id)
        ):
            job_send(job.id, {"type": "progress", "step": step, "total": total})
            return True
    fields = {"lease_expires_at": _lease_end()}
    if job.progress_total:
        fields.update(progress_step=job.progress_step, progress_total=job.progress_total)
    owned = bool(_owned(job).update(**fields))
    job._progress_written = now
    if owned:
        status_progress(job)  # its status copy: the step, and a longer life
    if owned and step is not None:
        job_send(job.id, {"type": "progress", "step": step, "total": total})
    return owned


# Between writes, a step looks for a cancel's stop signal (one Redis read)
# at most this often (seconds).
STOP_CHECK_SECONDS = 0.25


def _stop_check_due(job: Job, now: float) -> bool:
    if now - getattr(job, "_stop_checked", -math.inf) < STOP_CHECK_SECONDS:
        return False
    job._stop_checked = now
    return True


def job_succeed(*, job: Job, images: list) -> bool:
    """Store the images, mark succeeded and capture the hold, atomically. A
    late or duplicate attempt stores nothing and charges nothing."""
    stored = []
    for index, image in enumerate(images):
        row = JobImage(id=uuid.uuid4(), job=job, index=index, width=image.width, height=image.height)
        row.file.save(f"{index}.png", ContentFile(png_encode(image)), save=False)
        stored.append(row)
    finished = timezone.now()
    with transaction.atomic():
        done = _owned(job).update(
            status=Status.SUCCEEDED,
            finished_at=finished,
            lease_expires_at=None,
            # The last steps seen may not be written yet (JOB_PROGRESS_WRITE_SECONDS):
            # a finished job shows all of its steps done.
            progress_step=job.progress_total or F("progress_total"),
            progress_total=job.progress_total or F("progress_total"),
            credits_charged=job.credits_held,
            error_code="",
            error="",
        )
        if done:
            JobImage.objects.bulk_create(stored)
            credits_capture(hold_ref=job.hold_ref, ref=job.capture_ref, amount=job.credits_held)
            _ended(job)
    if not done:
        for row in stored:
            row.file.delete(save=False)
        return False
    job_event(
        "succeeded",
        job,
        credits_charged=job.credits_held,
        run_seconds=_seconds(job.started_at, finished),
        images=len(stored),
        batch_size=job.batch_size,
    )
    return True


def job_fail(*, job: Job, code: str, message: str, retry: bool) -> str:
    """Requeue the job while attempts remain and the error is worth it;
    otherwise fail it and release the hold. Returns what happened."""
    with transaction.atomic():
        if retry and job.attempts < settings.JOB_MAX_ATTEMPTS:
            requeued = _owned(job).update(
                status=Status.QUEUED,
                worker="",
                lease_expires_at=None,
                progress_step=0,
                error_code=code,
                error=message,
            )
            if requeued:
                slug = job.checkpoint.slug
                transaction.on_commit(lambda: job_dispatch(job_id=job.id, slug=slug, reason="retry"), robust=True)
                _announce(job.id)
                job_event("requeued", job, level=logging.WARNING, error_code=code)
                return "requeued"
        finished = timezone.now()
        failed = _owned(job).update(
            status=Status.FAILED, finished_at=finished, lease_expires_at=None, error_code=code, error=message
        )
        if failed:
            credits_release(hold_ref=job.hold_ref, ref=job.release_ref, memo=code)
            _ended(job)
            job_event(
                "failed",
                job,
                level=logging.WARNING,
                error_code=code,
                credits_released=job.credits_held,
                run_seconds=_seconds(job.started_at, finished),
            )
            return "failed"
    return "not owned"


def job_refuse_images(*, job: Job, flags: list[tuple[int, str, float]]) -> str:
    """The worker's image check flagged pictures of `job` (as (index, label,
    score)): record the flags for staff and fail the job with code
    "moderated", its hold released, in one transaction. Nothing of the
    pictures is stored. Returns job_fail's outcome."""
    with transaction.atomic():
        image_flags_record(job=job, flags=flags)
        return job_fail(job=job, code="moderated", message=FLAGGED_IMAGE, retry=False)


def job_viewed(*, user, job: Job, what: str) -> None:
    """Staff looking at someone else's job (its page, its JSON, a picture)
    leave a line in the admin log; the permission that allows it is
    generation.view_others_jobs. An owner's own look writes nothing."""
    if job.user_id != user.pk:
        LogEntry.objects.log_actions(
            user_id=user.pk,
            queryset=[job],
            action_flag=CHANGE,
            change_message=f"Viewed {what} of another person's job (not changed).",
            single_object=True,
        )
