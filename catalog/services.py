"""What staff do to the catalog: test loads on a live worker, enabling and
disabling checkpoints."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from catalog.availability import available_slugs
from catalog.models import Checkpoint, CheckpointTestRun
from catalog.queues import test_run_dispatch


def checkpoint_test_load(*, checkpoint: Checkpoint, requested_by) -> CheckpointTestRun:
    """Ask a live worker that serves `checkpoint` to load it and make one tiny
    image. With no such worker the run is recorded as failed at once."""
    if checkpoint.slug not in available_slugs():
        return CheckpointTestRun.objects.create(
            checkpoint=checkpoint,
            requested_by=requested_by,
            status=CheckpointTestRun.Status.FAILED,
            error_kind="unavailable",
            error="No live worker serves this checkpoint (no heartbeat lists it).",
            finished_at=timezone.now(),
        )
    run = CheckpointTestRun.objects.create(checkpoint=checkpoint, requested_by=requested_by)
    transaction.on_commit(lambda: test_run_dispatch(run_id=run.id, slug=checkpoint.slug))
    return run


def checkpoints_set_enabled(*, checkpoints, enabled: bool) -> int:
    return checkpoints.update(enabled=enabled, updated_at=timezone.now())
