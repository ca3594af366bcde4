"""Reads of the catalog and of jobs that several views share. Each is one
query or a fixed few, whatever the size of the catalog, the history or the
lineage."""

from __future__ import annotations

import uuid

from django.db.models import ExpressionWrapper, IntegerField, QuerySet, Value
from django_cte import CTE, with_cte

from generation.availability import available_slugs
from generation.errors import JobNotFound, UnknownModel
from generation.models import Checkpoint, Job, JobImage

LINEAGE_DEPTH = 20


# --- Catalog ----------------------------------------------------------------------------


def checkpoints_for_catalog() -> list[Checkpoint]:
    """The enabled checkpoints with their tags, each with `available` set
    from the live worker heartbeats: two queries and one Redis read."""
    available = available_slugs()
    checkpoints = list(Checkpoint.objects.filter(enabled=True).prefetch_related("tags"))
    for checkpoint in checkpoints:
        checkpoint.available = checkpoint.slug in available
    return checkpoints


def checkpoint_for_submit(slug: str) -> Checkpoint:
    checkpoint = Checkpoint.objects.filter(slug=slug, enabled=True).first()
    if checkpoint is None:
        raise UnknownModel(f"There is no model {slug!r}.", fields={"model": "unknown or disabled model"})
    return checkpoint


def checkpoints_priced() -> QuerySet[Checkpoint]:
    """Real (not test) enabled checkpoints, cheapest first: the price list."""
    return Checkpoint.objects.filter(enabled=True, is_test=False).order_by("price_per_image", "name")


def checkpoints_used_by(*, user) -> QuerySet[Checkpoint]:
    return Checkpoint.objects.filter(jobs__user=user).distinct()


# --- Jobs -------------------------------------------------------------------------------


def jobs_of(*, user) -> QuerySet[Job]:
    """The user's jobs, newest first, with their checkpoint."""
    return Job.objects.filter(user=user).select_related("checkpoint")


def job_for_user(*, user, job_id) -> Job:
    """The job if `user` owns it (or is staff), with its checkpoint and
    images; JobNotFound otherwise, the same answer as for a job that does
    not exist or an id that is not one."""
    job_uuid = _uuid(job_id)
    jobs = Job.objects.select_related("checkpoint").prefetch_related("images")
    if not user.is_staff:
        jobs = jobs.filter(user=user)
    job = jobs.filter(id=job_uuid).first() if job_uuid else None
    if job is None:
        raise JobNotFound("No such job.")
    return job


def image_for_user(*, user, image_id) -> JobImage:
    image_uuid = _uuid(image_id)
    images = JobImage.objects.select_related("job")
    if not user.is_staff:
        images = images.filter(job__user=user)
    image = images.filter(id=image_uuid).first() if image_uuid else None
    if image is None:
        raise JobNotFound("No such image.")
    return image


def queue_position(job: Job) -> int | None:
    """1 for the next job its checkpoint's workers will take; None unless queued."""
    if job.status != Job.Status.QUEUED:
        return None
    ahead = Job.objects.filter(checkpoint_id=job.checkpoint_id, status=Job.Status.QUEUED, created_at__lt=job.created_at)
    return ahead.count() + 1


def job_lineage(*, job: Job, limit: int = LINEAGE_DEPTH) -> list[Job]:
    """The job's ancestors, oldest first, the nearest `limit` of them: one
    recursive query however deep the lineage."""
    if job.parent_id is None:
        return []

    def ancestors(cte):
        parent = Job.objects.filter(id=job.parent_id).values("id", "parent_id", depth=Value(1, IntegerField()))
        further = (
            cte.join(Job, id=cte.col.parent_id)
            .values("id", "parent_id", depth=ExpressionWrapper(cte.col.depth + 1, output_field=IntegerField()))
            .filter(depth__lte=limit)
        )
        return parent.union(further, all=True)

    cte = CTE.recursive(ancestors)
    rows = cte.join(Job, id=cte.col.id).annotate(depth=cte.col.depth).order_by("-depth")
    return list(with_cte(cte, select=rows))


def job_children(*, job: Job) -> list[Job]:
    """Jobs of the same person that iterate on this one, oldest first."""
    return list(Job.objects.filter(parent=job, user_id=job.user_id).order_by("created_at"))


def job_history(*, user, model: str = "", status: str = "") -> QuerySet[Job]:
    """The user's jobs for the history page, newest first, with checkpoint
    and images (one query each, however many jobs)."""
    jobs = jobs_of(user=user).prefetch_related("images")
    if model:
        jobs = jobs.filter(checkpoint__slug=model)
    if status in Job.Status.values:
        jobs = jobs.filter(status=status)
    return jobs


def _uuid(value) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
