"""Reads of the catalog and of jobs that several views share. Each is one
query or a fixed few, whatever the size of the catalog, the history or the
lineage."""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import (
    Case,
    Count,
    ExpressionWrapper,
    F,
    IntegerField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncHour
from django_cte import CTE, with_cte

from catalog.availability import available_annotators, live_workers
from catalog.controls import NEEDS_WEIGHTS, WEIGHT_FREE, Preprocess
from catalog.models import Checkpoint, ControlNet, Lora
from generation.errors import JobNotFound, UnknownModel
from generation.estimates import ModelStatus
from generation.models import Job, JobImage, WebhookDelivery, WebhookSecret

LINEAGE_DEPTH = 20


# --- Catalog ----------------------------------------------------------------------------


def checkpoints_for_catalog() -> list[Checkpoint]:
    """The enabled checkpoints with their tags, each with `available` set
    from the live worker heartbeats and `controlnets`, the enabled
    ControlNets that fit it (each `available` where a worker serving this
    model has it), and `loras`, the enabled LoRAs that fit it (each
    `available` where a worker serving this model has its file): four
    queries and one Redis read."""
    workers = live_workers()
    available = {slug for worker in workers for slug in worker.get("serves", [])}
    # A ControlNet is available with a model where a worker serving the model has it.
    pairs = {
        (slug, control)
        for worker in workers
        for slug in worker.get("serves", [])
        for control in worker.get("controls", [])
    }
    checkpoints = list(Checkpoint.objects.filter(enabled=True).prefetch_related("tags"))
    controlnets = list(ControlNet.objects.filter(enabled=True))
    loras = list(Lora.objects.filter(enabled=True))
    with_lora = {
        (slug, lora) for worker in workers for slug in worker.get("serves", []) for lora in worker.get("loras", [])
    }
    for checkpoint in checkpoints:
        checkpoint.loras = []
        for lora in loras:
            if lora.fits(checkpoint):
                fitted = copy.copy(lora)
                fitted.available = (checkpoint.slug, lora.slug) in with_lora
                checkpoint.loras.append(fitted)
        checkpoint.available = checkpoint.slug in available
        checkpoint.controlnets = []
        for control in controlnets:
            if control.fits(checkpoint):
                fitted = copy.copy(control)  # its own `available`, for this model
                fitted.available = (checkpoint.slug, control.slug) in pairs
                checkpoint.controlnets.append(fitted)
    return checkpoints


def preprocess_choices() -> list[tuple[str, str, bool]]:
    """The ways to make a ControlNet map, as (value, label, available): the
    weight-free ones, then those with weights, available where a live
    worker has their annotator (a submit with another is refused)."""
    here = available_annotators()
    choices = []
    for preprocess in sorted(Preprocess, key=lambda p: p in NEEDS_WEIGHTS):
        available = preprocess in WEIGHT_FREE or preprocess in here
        label = preprocess.label.split(" (")[0] if preprocess in NEEDS_WEIGHTS else preprocess.label
        choices.append((preprocess.value, label if available else f"{label} (not on this service)", available))
    return choices


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
    return Job.objects.filter(user=user).select_related("checkpoint", "controlnet")


# --- The fair queue -----------------------------------------------------------------
#
# Within a checkpoint, workers take queued jobs round-robin across people.
# A queued job's rank is how many turns its owner has had, or has ahead of
# it, in the checkpoint's current busy period: the owner's queued jobs
# before it, plus the owner's jobs started since the oldest job still
# waiting was queued (turns taken while others waited). Its round is that
# rank divided by the owner's queue weight (1 unless staff raised it).
# Rounds go in order; within a round heavier weights go first, then the
# older job. So one person's burst waits behind everyone else's first job,
# and a priority account gets more turns per round without starving anyone.
# The claim (generation.services.job_claim) and the queue positions people
# see use these same keys, so what they are shown is what happens.

FAIR_ORDER = ("fair_round", "-fair_weight", "created_at", "id")


def fair_keys(jobs: QuerySet[Job]) -> QuerySet[Job]:
    """`jobs` annotated with their fair-queue keys: fair_round and fair_weight
    (meaningful for queued jobs; order queued ones by FAIR_ORDER)."""
    busy_since = (
        Job.objects.filter(checkpoint_id=OuterRef(OuterRef("checkpoint_id")), status=Job.Status.QUEUED)
        .order_by("created_at")
        .values("created_at")[:1]
    )
    queued_before = Q(status=Job.Status.QUEUED) & (
        Q(created_at__lt=OuterRef("created_at")) | Q(created_at=OuterRef("created_at"), id__lt=OuterRef("id"))
    )
    turns = (
        Job.objects.filter(user_id=OuterRef("user_id"), checkpoint_id=OuterRef("checkpoint_id"))
        .exclude(id=OuterRef("id"))
        .filter(queued_before | Q(started_at__gte=Subquery(busy_since)))
        .order_by()
        .values("user_id")
        .annotate(count=Count("pk"))
        .values("count")
    )
    rank = Coalesce(Subquery(turns, output_field=IntegerField()), 0)
    return jobs.annotate(
        fair_weight=F("user__queue_weight"),
        fair_round=ExpressionWrapper(rank / F("user__queue_weight"), output_field=IntegerField()),
    )


def fair_queue(**filters) -> QuerySet[Job]:
    """The queued jobs matching `filters` (a checkpoint, and for batching its
    size and schedule), in the order workers take them."""
    return fair_keys(Job.objects.filter(status=Job.Status.QUEUED, **filters)).order_by(*FAIR_ORDER)


def jobs_shown(jobs: QuerySet[Job]) -> QuerySet[Job]:
    """What showing a job needs (generation.schemas.JobOut): its checkpoint,
    its images, its webhook delivery, and for a queued job how many wait
    before it in the fair queue, in the same query (subqueries), not one
    query per job."""
    same_round = Q(fair_round=OuterRef("fair_round"))
    heavier = Q(fair_weight__gt=OuterRef("fair_weight"))
    same_weight = Q(fair_weight=OuterRef("fair_weight"))
    older = Q(created_at__lt=OuterRef("created_at")) | Q(created_at=OuterRef("created_at"), id__lt=OuterRef("id"))
    ahead = (
        fair_keys(Job.objects.filter(checkpoint_id=OuterRef("checkpoint_id"), status=Job.Status.QUEUED))
        .filter(Q(fair_round__lt=OuterRef("fair_round")) | same_round & (heavier | same_weight & older))
        .order_by()
        .values("checkpoint_id")
        .annotate(count=Count("pk"))
        .values("count")
    )
    jobs = fair_keys(jobs)
    waiting = Case(
        When(status=Job.Status.QUEUED, then=Coalesce(Subquery(ahead, output_field=IntegerField()), 0)),
        default=None,
        output_field=IntegerField(),
    )
    return (
        jobs.select_related("checkpoint", "controlnet", "webhook_delivery")
        .defer("webhook_delivery__payload")
        .prefetch_related("images")
        .annotate(queue_ahead=waiting)
    )


def job_rows() -> QuerySet[Job]:
    """Jobs read one at a time (a status poll, a snapshot, a page): the
    checkpoint and the webhook delivery joined, one query. The fair-queue
    subqueries of jobs_shown cost more to build than the read itself, so a
    queued job's position and a finished job's images are read only when
    asked for (queue_position; JobOut.resolve_images)."""
    return Job.objects.select_related("checkpoint", "controlnet", "webhook_delivery").defer("webhook_delivery__payload")


def job_status(*, user, job_id) -> Job:
    """job_for_user for a status read (the JSON API's job, a websocket's
    snapshot): the same answer in one query written once (_STATUS_READ),
    since polls are most of the traffic and the ORM takes longer to build
    this query than the database takes to answer it. The job comes with what
    JobOut reads: its checkpoint's and ControlNet's slugs and its webhook delivery's state
    (neither one complete: they are for showing, not for changing)."""
    if user.is_staff:  # may see others' jobs: the permission check is job_for_user's
        return job_for_user(user=user, job_id=job_id)
    try:
        pk = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise JobNotFound("No such job.") from None
    found = list(Job.objects.raw(_STATUS_READ, [Job._meta.pk.get_db_prep_value(pk, connection), user.pk]))
    if not found:
        raise JobNotFound("No such job.")
    job = found[0]
    job.checkpoint = Checkpoint(id=job.checkpoint_id, slug=job.model_slug)
    job.controlnet = ControlNet(id=job.controlnet_id, slug=job.control_slug) if job.controlnet_id else None
    delivery = None
    if job.delivery_status is not None:
        delivery = WebhookDelivery(
            job=job, url=job.delivery_url, status=job.delivery_status, attempts=job.delivery_attempts
        )
    Job.webhook_delivery.related.set_cached_value(job, delivery)
    return job


# Literal SQL (the tables are the migrations'), the same on PostgreSQL and
# SQLite; tests/test_query_counts.py holds it equal to the ORM's read.
_STATUS_READ = """
    SELECT j.*, c.slug AS model_slug, n.slug AS control_slug,
           d.url AS delivery_url, d.status AS delivery_status, d.attempts AS delivery_attempts
    FROM generation_job j
    JOIN catalog_checkpoint c ON c.id = j.checkpoint_id
    LEFT JOIN catalog_controlnet n ON n.id = j.controlnet_id
    LEFT JOIN generation_webhookdelivery d ON d.job_id = j.id
    WHERE j.id = %s AND j.user_id = %s
"""


def job_for_user(*, user, job_id, rows: QuerySet[Job] | None = None) -> Job:
    """The job if `user` owns it (or is staff), read from `rows` (job_rows()
    unless given, e.g. jobs_shown() for a page that shows everything);
    JobNotFound otherwise, the same answer as for a job that does not exist
    or an id that is not one."""
    job = _visible_one(job_rows() if rows is None else rows, user=user, owner="user", pk=job_id)
    if job is None:
        raise JobNotFound("No such job.")
    return job


def job_owned_by(*, user, job_id) -> Job:
    """The job if `user` owns it; JobNotFound otherwise. For actions on a job
    (cancel, again, a parent of a new job): staff who may see everyone's jobs
    only read them (job_for_user), they never act on them."""
    job = _visible_one(job_rows(), user=user, owner="user", pk=job_id, owner_only=True)
    if job is None:
        raise JobNotFound("No such job.")
    return job


def image_for_user(*, user, image_id) -> JobImage:
    """The image if `user` owns its job or may see everyone's (a look at
    someone else's is logged by generation.services.image_viewed)."""
    image = _visible_one(JobImage.objects.select_related("job"), user=user, owner="job__user", pk=image_id)
    if image is None:
        raise JobNotFound("No such image.")
    return image


def queue_position(job: Job) -> int | None:
    """1 for the next job its checkpoint's workers will take; None unless
    queued. Free for a job from jobs_shown(); one query otherwise, written
    once (_POSITION_READ): every submit's answer and every poll of a queued
    job reads it, and the ORM took 12-15 ms to build the fair keys'
    subqueries that the database answers in under one."""
    if job.status != Job.Status.QUEUED:
        return None
    ahead = getattr(job, "queue_ahead", None)
    if ahead is None:
        with connection.cursor() as cursor:
            cursor.execute(_POSITION_READ, [Job._meta.pk.get_db_prep_value(job.id, connection)])
            row = cursor.fetchone()
        ahead = row[0] if row else 0
    return ahead + 1


# The fair queue of one checkpoint (fair_keys, fair_queue) in literal SQL, the
# same on PostgreSQL and SQLite: `checkpoint` is the SQL of its id (a
# parameter, or a subquery). tests/test_fair_queue.py holds the position and
# the claim order equal to the ORM's for queues in any state.
def _fair_queued(checkpoint: str) -> str:
    # Built from this module's constant fragments only; every value is a parameter.
    return f"""
    busy AS (
        SELECT MIN(created_at) AS since FROM generation_job WHERE checkpoint_id = {checkpoint} AND status = 'queued'
    ),
    queued AS (
        SELECT j.id, j.created_at, j.mode, j.controlnet_id, j.preprocess, j.loras, u.queue_weight AS weight,
               (SELECT COUNT(*) FROM generation_job t
                WHERE t.user_id = j.user_id AND t.checkpoint_id = j.checkpoint_id AND t.id <> j.id
                  AND ((t.status = 'queued'
                        AND (t.created_at < j.created_at OR (t.created_at = j.created_at AND t.id < j.id)))
                       OR t.started_at >= busy.since)
               ) / u.queue_weight AS round
        FROM generation_job j
        JOIN accounts_user u ON u.id = j.user_id
        CROSS JOIN busy
        WHERE j.checkpoint_id = {checkpoint} AND j.status = 'queued'
    )"""  # noqa: S608


# jobs_shown's count of the jobs ahead, for one job.
_POSITION_READ = f"""
    WITH me AS (SELECT id, checkpoint_id FROM generation_job WHERE id = %s AND status = 'queued'),
    {_fair_queued("(SELECT checkpoint_id FROM me)")}
    SELECT COUNT(*) FROM queued q JOIN queued mine ON mine.id = (SELECT id FROM me)
    WHERE q.round < mine.round
       OR (q.round = mine.round AND (q.weight > mine.weight
           OR (q.weight = mine.weight
               AND (q.created_at < mine.created_at OR (q.created_at = mine.created_at AND q.id < mine.id)))))
"""  # noqa: S608

_FAIR_NEXT = f"""
    WITH {_fair_queued("%s")}
    SELECT q.id, q.loras FROM queued q LEFT JOIN catalog_controlnet n ON n.id = q.controlnet_id
    WHERE {{runnable}}
    ORDER BY q.round, q.weight DESC, q.created_at, q.id
    LIMIT %s
"""  # noqa: S608


def fair_next(*, checkpoint_id, limit: int, controls=None, annotators=frozenset(), loras=None) -> list:
    """The ids of the first `limit` queued jobs of a checkpoint in the fair
    queue's order (fair_queue's, without the ORM's 10 ms of building it: a
    worker reads it for every claim). Given `controls` (the ControlNet slugs
    a worker has) only the jobs it can run: a ControlNet job whose network
    is among them and whose preprocess, if it needs weights, among
    `annotators` (generation.services.Abilities.runnable's rule); given
    `loras` (the LoRAs it has), only jobs whose LoRAs are all among them (a
    worker with none reads only jobs without LoRAs)."""
    from catalog.controls import NEEDS_WEIGHTS

    params: list = [checkpoint_id, checkpoint_id]
    runnable = "1 = 1"
    if controls is not None:
        controls = sorted(str(slug) for slug in controls)
        missing = sorted(str(preprocess) for preprocess in NEEDS_WEIGHTS - set(annotators))
        network = f"n.slug IN ({', '.join(['%s'] * len(controls))})" if controls else "1 = 0"
        preprocess = f"q.preprocess IN ({', '.join(['%s'] * len(missing))})" if missing else "1 = 0"
        runnable = f"NOT (q.mode = 'controlnet' AND (n.slug IS NULL OR NOT ({network}) OR {preprocess}))"
        params += [*controls, *missing]
    if loras is not None and not loras:
        runnable += " AND q.loras = '[]'"
    with connection.cursor() as cursor:
        cursor.execute(_FAIR_NEXT.format(runnable=runnable), [*params, limit])
        rows = cursor.fetchall()
    if loras:
        rows = [row for row in rows if all(item["slug"] in loras for item in _json(row[1]))]
    return [Job._meta.pk.to_python(row[0]) for row in rows]


def _json(value):
    """A JSON column as read by a raw cursor: text (SQLite, and PostgreSQL
    as Django sets psycopg up) or already decoded."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def job_lineage(*, job: Job, limit: int = LINEAGE_DEPTH) -> list[Job]:
    """The job's ancestors, oldest first, the nearest `limit` of them: one
    recursive query however deep the lineage."""
    if job.parent_id is None:
        return []

    def ancestors(cte):
        # No ORDER BY inside the union (Job's default ordering): SQLite refuses it.
        parent = (
            Job.objects.filter(id=job.parent_id).order_by().values("id", "parent_id", depth=Value(1, IntegerField()))
        )
        further = (
            cte.join(Job, id=cte.col.parent_id)
            .order_by()
            .values("id", "parent_id", depth=ExpressionWrapper(cte.col.depth + 1, output_field=IntegerField()))
            .filter(depth__lte=limit)
        )
        return parent.union(further, all=True)

    cte = CTE.recursive(ancestors)
    rows = cte.join(Job, id=cte.col.id).annotate(depth=cte.col.depth).order_by("-depth")
    return list(with_cte(cte, select=rows))


def job_snapshot(job_id) -> Job | None:
    """A job as its websocket subscribers see it after a change."""
    return job_rows().filter(id=job_id).first()


def job_visible(*, user, job_id) -> bool:
    """Whether job_for_user would find it, without loading it."""
    return _visible_one(Job.objects.only("id"), user=user, owner="user", pk=job_id) is not None


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


def _visible_one(rows: QuerySet, *, user, owner: str, pk, owner_only: bool = False):
    """The row with this primary key if `user` owns it (or holds
    generation.view_others_jobs); None for anyone else, for a missing row and
    for a pk that is not a UUID."""
    try:
        pk = pk if isinstance(pk, uuid.UUID) else uuid.UUID(str(pk))
    except ValueError:
        return None
    # is_staff first: people who are not staff never pay the permission query.
    if owner_only or not (user.is_staff and user.has_perm("generation.view_others_jobs")):
        rows = rows.filter(**{owner: user})
    return rows.filter(pk=pk).first()


# --- Webhooks ---------------------------------------------------------------------------


def webhook_secret_of(*, user) -> str | None:
    """The person's signing secret, if they have one yet (pages show it;
    generation.webhooks.webhook_secret_get creates it)."""
    return WebhookSecret.objects.filter(user=user).values_list("key", flat=True).first()


# --- Totals for operators (metrics, status) ------------------------------------------------


def job_counts() -> list[tuple[str, str, str, int]]:
    """(status, checkpoint slug, mode, number of jobs) for every combination
    that has jobs: one grouped query."""
    return list(Job.objects.values_list("status", "checkpoint__slug", "mode").annotate(n=Count("id")).order_by())


def queues_waiting() -> dict[str, tuple[int, datetime]]:
    """slug -> (jobs queued, when the oldest of them was submitted), for the
    checkpoints that have queued jobs: one grouped query."""
    rows = (
        Job.objects.filter(status=Job.Status.QUEUED)
        .values_list("checkpoint__slug")
        .annotate(n=Count("id"), oldest=Min("created_at"))
        .order_by()
    )
    return {slug: (n, oldest) for slug, n, oldest in rows}


def webhook_counts() -> dict[str, int]:
    """Webhook deliveries by status (pending, delivered, failed): one query."""
    return dict(WebhookDelivery.objects.values_list("status").annotate(n=Count("id")).order_by())


# --- Staff dashboard ----------------------------------------------------------------


@dataclass(frozen=True)
class HourOfJobs:
    hour: datetime
    submitted: int
    succeeded: int
    failed: int


def jobs_per_hour(*, since: datetime, now: datetime) -> list[HourOfJobs]:
    """Jobs submitted in each hour from `since` to `now` (hours without any
    included), with how many of them succeeded and failed: one query."""
    rows = (
        Job.objects.filter(created_at__gte=since)
        .annotate(hour=TruncHour("created_at"))
        .order_by()
        .values("hour")
        .annotate(
            submitted=Count("pk"),
            succeeded=Count("pk", filter=Q(status=Job.Status.SUCCEEDED)),
            failed=Count("pk", filter=Q(status=Job.Status.FAILED)),
        )
    )
    found = {row["hour"]: row for row in rows}
    hours = []
    hour = since.replace(minute=0, second=0, microsecond=0)
    while hour <= now:
        row = found.get(hour, {})
        hours.append(HourOfJobs(hour, row.get("submitted", 0), row.get("succeeded", 0), row.get("failed", 0)))
        hour += timedelta(hours=1)
    return hours


def failures_by_code(*, since: datetime) -> list[dict]:
    """[{"error_code", "count"}] of the jobs that failed since then, most
    frequent first: one query."""
    return list(
        Job.objects.filter(status=Job.Status.FAILED, finished_at__gte=since)
        .order_by()
        .values("error_code")
        .annotate(count=Count("pk"))
        .order_by("-count", "error_code")
    )


def busiest_checkpoints(*, since: datetime, limit: int = 10) -> list[dict]:
    """The checkpoints with the most jobs submitted since then: [{"slug",
    "name", "jobs", "succeeded", "failed", "images", "credits"}], credits
    being what their jobs were charged. One query."""
    succeeded = Q(status=Job.Status.SUCCEEDED)
    return list(
        Job.objects.filter(created_at__gte=since)
        .order_by()
        .values(slug=F("checkpoint__slug"), name=F("checkpoint__name"))
        .annotate(
            jobs=Count("pk"),
            succeeded=Count("pk", filter=succeeded),
            failed=Count("pk", filter=Q(status=Job.Status.FAILED)),
            images=Coalesce(Sum("num_images", filter=succeeded), 0),
            credits=Coalesce(Sum("credits_charged"), 0),
        )
        .order_by("-jobs", "slug")[:limit]
    )


@dataclass(frozen=True)
class SlowJob:
    job: Job
    reason: str


def jobs_stuck(*, statuses: list[ModelStatus], now: datetime, limit: int = 50) -> list[SlowJob]:
    """Running jobs past their lease or JOB_SLOW_FACTOR times past their
    model's typical run, and queued jobs waiting JOB_SLOW_FACTOR times their
    model's expected wait (never flagged before JOB_SLOW_MIN_SECONDS): the
    oldest first, at most `limit` of each kind. Two queries; `statuses` are
    generation.estimates.model_statuses()."""
    by_slug = {status.slug: status for status in statuses}
    floor = settings.JOB_SLOW_MIN_SECONDS

    def threshold(seconds: float | None) -> float:
        return max(floor, settings.JOB_SLOW_FACTOR * seconds) if seconds else floor

    found = []
    # Only candidates reach the limit: past their lease, or running longer than the floor.
    candidates = Q(lease_expires_at__lt=now) | Q(started_at__lt=now - timedelta(seconds=floor))
    running = (
        Job.objects.filter(candidates, status=Job.Status.RUNNING).select_related("checkpoint").order_by("started_at")
    )
    for job in running[:limit]:
        status = by_slug.get(job.checkpoint.slug)
        typical = status.typical_run_seconds if status else None
        elapsed = (now - (job.started_at or job.created_at)).total_seconds()
        if job.lease_expires_at is not None and job.lease_expires_at < now:
            found.append(SlowJob(job, f"lease expired {_ago(now - job.lease_expires_at)} ago"))
        elif elapsed > threshold(typical):
            found.append(SlowJob(job, f"running {_ago(elapsed)} (typical {_ago(typical) if typical else 'unknown'})"))
    # A disabled model's queued jobs (not in `statuses`) are judged by the floor alone.
    waiting = ~Q(checkpoint__slug__in=by_slug) & Q(created_at__lt=now - timedelta(seconds=floor))
    for status in statuses:
        waiting |= Q(
            checkpoint__slug=status.slug,
            created_at__lt=now - timedelta(seconds=threshold(status.expected_wait_seconds)),
        )
    queued = Job.objects.filter(waiting, status=Job.Status.QUEUED).select_related("checkpoint").order_by("created_at")
    for job in queued[:limit]:
        status = by_slug.get(job.checkpoint.slug)
        expected = status.expected_wait_seconds if status else None
        found.append(
            SlowJob(job, f"queued {_ago(now - job.created_at)} (expected {_ago(expected) if expected else 'unknown'})")
        )
    return found


def _ago(span: timedelta | float) -> str:
    seconds = int(span.total_seconds() if isinstance(span, timedelta) else span)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
