"""The sweeps every worker runs: the reaper (a dead worker's jobs failed or
requeued, lost messages sent again) and retention (old pictures deleted)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from billing.ledger import credits_release
from catalog.availability import (
    heartbeat_client,
    worker_is_beating,
    worker_is_gone,
)
from generation.affinity import reservations_orphaned
from generation.dispatch import (
    job_dispatch,
    jobs_unsent,
)
from generation.metrics import reaper_observed
from generation.models import Job, JobImage
from generation.observe import job_event
from generation.params import (
    JOB_FILES,
)
from generation.services._common import (
    REAPER_LOCK,
    WORKER_LOST,
    Status,
    _ended,
    log,
)
from generation.services.lifecycle import job_fail


def jobs_reap() -> dict[str, int]:
    """Periodic, idempotent, safe to run anywhere and concurrently:
    - a running job whose owner process on this host is gone, or whose lease
      expired while its owner's heartbeat is gone too, lost its worker
      (killed, out of memory, machine gone): retry it or fail it and release;
    - a job queued too long with no worker to take it fails and is released;
    - a queued job whose message is no longer in the broker (a Redis restart,
      a publish that failed after commit) is sent again, and so is a turn
      forwarded to a worker that stopped beating before it took it
      (generation.affinity)."""
    now = timezone.now()
    counts = {"requeued": 0, "failed": 0, "resent": 0}
    running = Job.objects.filter(status=Status.RUNNING)
    expired = set(running.filter(Q(lease_expires_at__lt=Now()) | Q(lease_expires_at=None)).values_list("id", flat=True))
    for job in running.select_related("checkpoint"):
        # An expired lease alone is not proof while the owner still beats in
        # Redis and lists the job: after a database outage it renews within
        # a beat. An owner that beats without the job lost it to a fault.
        if worker_is_gone(job.worker) or (job.id in expired and not worker_is_beating(job.worker, job_id=job.id)):
            try:
                outcome = job_fail(job=job, code="worker_lost", message=WORKER_LOST, retry=True)
            except DatabaseError:
                raise  # the database itself: the next pass tries again
            except Exception:
                # This job alone (its row rolled back): the pass goes on to the others.
                log.exception("reaper: could not take back job %s", job.id)
                outcome = "errors"
            counts[outcome] = counts.get(outcome, 0) + 1
    stale = now - timedelta(seconds=settings.JOB_QUEUE_TIMEOUT)
    for job in Job.objects.filter(status=Status.QUEUED, created_at__lt=stale).select_related("checkpoint"):
        with transaction.atomic():
            if Job.objects.filter(id=job.id, status=Status.QUEUED).update(
                status=Status.FAILED,
                finished_at=now,
                error_code="queue_timeout",
                error="No worker could take this job in time. The held credits were returned.",
            ):
                credits_release(hold_ref=job.hold_ref, ref=job.release_ref, memo="queue timeout")
                _ended(job)
                job_event(
                    "failed", job, level=logging.WARNING, error_code="queue_timeout", credits_released=job.credits_held
                )
                counts["failed"] += 1
    waiting = dict(
        Job.objects.filter(
            status=Status.QUEUED, created_at__lt=now - timedelta(seconds=settings.JOB_RESEND_AFTER)
        ).values_list("id", "checkpoint__slug")
    )
    for job_id in jobs_unsent(list(waiting)):
        job_dispatch(job_id=job_id, slug=waiting[job_id], reason="resend")
        counts["resent"] += 1
    # A turn forwarded to a worker that stopped beating before it took it.
    for slug in reservations_orphaned():
        oldest = Job.objects.filter(status=Status.QUEUED, checkpoint__slug=slug).order_by("created_at").first()
        if oldest is not None:
            job_dispatch(job_id=oldest.id, slug=slug, reason="resend")
            counts["resent"] += 1
    if any(counts.values()):
        log.warning("reaper: %s", counts)
    reaper_observed(counts)
    return counts


def jobs_reap_if_due(*, owner: str) -> dict[str, int] | None:
    """Run jobs_reap unless someone ran it less than REAPER_INTERVAL ago:
    every worker process calls this from its reaper thread (and beat from its
    schedule), so the reaper runs while any one of them is alive. None when
    skipped."""
    if not heartbeat_client().set(REAPER_LOCK, owner, nx=True, px=settings.REAPER_INTERVAL * 1000):
        return None
    return jobs_reap()


def results_expire(*, limit: int = 500) -> int:
    """Delete the uploads and results of jobs that finished more than
    RESULT_RETENTION_DAYS ago (0: never), oldest first, at most `limit` a
    run. The job rows stay, with expired_at set (pages say "expired" where
    the pictures were); the ledger is not touched. Rows change first, files
    go after the commit: a job never points at a deleted file. Returns how
    many jobs expired."""
    if not settings.RESULT_RETENTION_DAYS:
        return 0
    cutoff = timezone.now() - timedelta(days=settings.RESULT_RETENTION_DAYS)
    due = Job.objects.filter(finished_at__lt=cutoff, expired_at=None).order_by("finished_at")[:limit]
    expired = 0
    for job in due.prefetch_related("images"):
        kept = [getattr(job, field).name for field in JOB_FILES]
        files = [image.file.name for image in job.images.all()] + kept
        with transaction.atomic():
            expire = Job.objects.filter(id=job.id, expired_at=None)
            if not expire.update(expired_at=timezone.now(), **dict.fromkeys(JOB_FILES, "")):
                continue
            JobImage.objects.filter(job=job).delete()
        for name in filter(None, files):
            try:
                job.input_image.storage.delete(name)
            # Any store's failure (an S3 error is no OSError): the sweep goes on.
            except Exception:
                log.warning("could not delete %s of expired job %s", name, job.id, exc_info=True)
        job_event("expired", job, files=len(files))
        expired += 1
    if expired:
        log.info("retention: deleted the pictures of %s jobs", expired)
    return expired
