"""The worker side's claims: a turn takes the next job a worker can run (the
fair queue), a dead worker's job is taken over, companions join a batch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F, Q

from catalog.availability import (
    runs_controlnet,
    worker_is_gone,
)
from catalog.controls import NEEDS_WEIGHTS
from catalog.models import Checkpoint
from catalog.modes import Mode
from generation.dispatch import (
    job_received,
    job_redirect,
)
from generation.events import job_announce
from generation.models import Job
from generation.params import (
    BATCH_FIELDS,
    MODE_RULES,
)
from generation.selectors import fair_next, fair_queue
from generation.services._common import (
    BATCH_POLL_SECONDS,
    CLAIM_TRIES,
    WORKER_LOST,
    Status,
    _announce,
    _claim_fields,
    _claim_queued,
    _started,
    log,
)
from generation.services.lifecycle import job_fail
from generation.status_cache import status_forget

# --- Worker side --------------------------------------------------------------------


@dataclass(frozen=True)
class Abilities:
    """What a worker can run beyond its checkpoints: the ControlNets it has
    and the annotators with weights. A claim takes a ControlNet job only for
    a worker that can run it; a turn of one that reaches another worker is
    sent on to one that can (_redirect)."""

    controls: frozenset[str] = frozenset()
    annotators: frozenset[str] = frozenset()
    # The LoRAs it has the files of (None: any, as a process run in place).
    loras: frozenset[str] | None = None

    def runnable(self) -> Q:
        """The jobs these abilities can run, as a filter (can_run's rule)."""
        cannot = Q(mode=Mode.CONTROLNET) & (
            ~Q(controlnet__slug__in=self.controls) | Q(preprocess__in=NEEDS_WEIGHTS - self.annotators)
        )
        # Which LoRAs a job names is checked on the row (can_run): a filter
        # can say only "none" for a worker that has none.
        return ~cannot & (Q(loras=[]) if self.loras is not None and not self.loras else Q())

    def can_run(self, job: Job) -> bool:
        """Whether these abilities can run `job` (runnable's rule, on a job in hand)."""
        if self.loras is not None and any(item["slug"] not in self.loras for item in job.loras):
            return False
        if job.mode != Mode.CONTROLNET:
            return True
        return job.control in self.controls and (
            job.preprocess not in NEEDS_WEIGHTS or job.preprocess in self.annotators
        )


def job_claim(*, job_id, worker: str, slug: str | None = None, abilities: Abilities | None = None) -> Job | None:
    """A worker took the message of job `job_id` (from the queue of
    checkpoint `slug`): take a job of that checkpoint for `worker`, queued ->
    running by a conditional update, or None when none is queued.

    The message is a turn, not a ticket: the job taken is the next one of its
    checkpoint in the fair queue (generation.selectors.fair_queue), which may
    be another person's; the message's own job, still queued, is then served
    by the message of the job taken. So a turn is never wasted while a job
    waits: a lost race reads the queue again, and a message whose job is gone
    (deleted) or taken over still serves the queue. A running job whose owner
    process is provably dead (the message came back after its worker was
    killed) is taken over at once, or failed and released when it has used
    its attempts, instead of waiting for its lease to run out.

    `abilities`: what the worker can run (None: anything, as a worker
    process run in place, by tests, can)."""
    message_job = Job.objects.filter(id=job_id).select_related("checkpoint", "controlnet").first()
    if message_job is not None and message_job.status != Status.QUEUED:
        job_received(job_id)
    if (
        message_job is not None
        and message_job.status == Status.RUNNING
        and message_job.worker != worker
        and worker_is_gone(message_job.worker)
        and (abilities is None or abilities.can_run(message_job))
        and (taken := _take_over(message_job, worker)) is not None
    ):
        return taken
    if message_job is not None:
        checkpoint_id = message_job.checkpoint_id
        if abilities is not None and message_job.status == Status.QUEUED and not abilities.can_run(message_job):
            _redirect(message_job, worker)
    else:
        job_received(job_id)
        checkpoint_id = Checkpoint.objects.filter(slug=slug).values_list("id", flat=True).first() if slug else None
        if checkpoint_id is None:
            return None
    return _claim_next(checkpoint_id, worker, abilities)


def _redirect(job: Job, worker: str) -> None:
    """The turn of a ControlNet job, or of a job with LoRAs, came to a worker
    that cannot run it (this one serves the rest of its queue): the turn goes
    to a live worker that can, or, with none now, unmarked, the reaper's
    sweep sends it again (JOB_RESEND_AFTER) until one can (or the queue's
    time limit refunds it)."""
    annotator = job.preprocess if job.preprocess in NEEDS_WEIGHTS else None
    slug, control = job.checkpoint.slug, job.control
    loras = {item["slug"] for item in job.loras}

    def able(heartbeat: dict) -> bool:
        if not loras <= set(heartbeat.get("loras", [])):
            return False
        if job.mode != Mode.CONTROLNET:
            return slug in heartbeat.get("serves", [])
        return runs_controlnet(heartbeat, slug=slug, control=control, annotator=annotator)

    try:
        if job_redirect(job_id=job.id, slug=slug, worker=worker, able=able):
            return
    except Exception:
        log.warning("could not redirect the turn of job %s; the sweep will", job.id, exc_info=True)
    job_received(job.id)


def job_claim_warm(*, slugs: list[str], worker: str, abilities: Abilities | None = None) -> Job | None:
    """Model affinity: a worker took a turn of a checkpoint it does not hold
    and sent that turn back to its queue; take instead the next job (fair
    order) of the first of `slugs` (checkpoints it holds) that has one, or
    None. The job's own message stays queued: an extra turn of its
    checkpoint, harmless."""
    ids = dict(Checkpoint.objects.filter(slug__in=slugs).values_list("slug", "id"))
    for slug in slugs:
        if slug in ids and (job := _claim_next(ids[slug], worker, abilities)) is not None:
            return job
    return None


def _claim_next(checkpoint_id, worker: str, abilities: Abilities | None = None) -> Job | None:
    """The next queued job of the checkpoint in the fair queue that `worker`
    can run, claimed for it: a lost race reads the queue again, so a turn is
    never wasted while a job waits."""
    tried: set = set()
    able = (
        {}
        if abilities is None
        else {"controls": abilities.controls, "annotators": abilities.annotators, "loras": abilities.loras}
    )
    while True:
        queued = fair_next(checkpoint_id=checkpoint_id, limit=CLAIM_TRIES + len(tried), **able)
        candidates = [candidate for candidate in queued if candidate not in tried][:CLAIM_TRIES]
        if not candidates:
            return None
        for candidate in candidates:
            if _claim_queued(candidate, worker):
                job_received(candidate)
                _announce(candidate)
                job = Job.objects.select_related("checkpoint").get(id=candidate)
                _started(job)
                return job
            tried.add(candidate)


def _take_over(orphan: Job, worker: str) -> Job | None:
    if orphan.attempts >= settings.JOB_MAX_ATTEMPTS:
        job_fail(job=orphan, code="worker_lost", message=WORKER_LOST, retry=False)
        return None
    claimed = Job.objects.filter(
        id=orphan.id, status=Status.RUNNING, worker=orphan.worker, attempts=orphan.attempts
    ).update(**_claim_fields(worker))
    if not claimed:
        return None
    log.warning("job %s: took over from %s, which died", orphan.id, orphan.worker)
    _announce(orphan.id)
    job = Job.objects.select_related("checkpoint").get(id=orphan.id)
    _started(job, taken_over_from=orphan.worker)
    return job


def job_claim_companions(
    *, job: Job, worker: str, images: int, wait_ms: int = 0, on_claim: Callable[[object], None] | None = None
) -> list[Job]:
    """Batching across people: claim for `worker` the next queued jobs (in
    the fair queue's order) that can share `job`'s pipeline call: the same
    checkpoint and JobParams.batch_key (size, schedule, a negative prompt
    too or neither); any prompt, seed or input.
    At most `images` images in all, waiting up to `wait_ms` for them. Only
    jobs on their first attempt join (a batch that failed does not form
    again). Each is claimed by the same conditional update as job_claim, so
    it runs once; its own message later serves another queued job."""
    if not MODE_RULES[job.mode].batches or job.loras or job.hires_scale > 1:
        # A job with LoRAs runs alone (its adapters change the whole call),
        # and one with a hires pass too (its rows are that much larger than
        # the images the batch's budget counts).
        return []
    deadline = time.monotonic() + wait_ms / 1000
    # JobParams.batch_key, as a query (no LoRAs, as this job has none).
    same_call = {field: getattr(job, field) for field in BATCH_FIELDS} | {"loras": []}
    compatible = fair_queue(checkpoint_id=job.checkpoint_id, attempts=0, **same_call).exclude(id=job.id)
    compatible = (
        compatible.filter(negative_prompt="") if not job.negative_prompt else compatible.exclude(negative_prompt="")
    )
    claimed: list = []
    try:
        while images > 0:
            for candidate_id, count in compatible.filter(num_images__lte=images).values_list("id", "num_images")[
                :images
            ]:
                if count <= images and _claim_queued(candidate_id, worker):
                    claimed.append(candidate_id)
                    images -= count
                    if on_claim is not None:  # e.g. the worker's heartbeat lists it from now on
                        on_claim(candidate_id)
            if images <= 0 or time.monotonic() >= deadline:
                break
            time.sleep(min(BATCH_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        if not claimed:
            return []
        for candidate_id in claimed:
            job_received(candidate_id)
            _announce(candidate_id)
        Job.objects.filter(id__in=[job.id, *claimed], worker=worker).update(batch_size=1 + len(claimed))
        found = Job.objects.filter(id__in=claimed).select_related("checkpoint").in_bulk()
    except Exception:
        # Give back what was claimed: a job must not stay running under a
        # worker that will not run it. Their messages are still queued.
        Job.objects.filter(id__in=claimed, worker=worker, status=Status.RUNNING).update(
            status=Status.QUEUED,
            worker="",
            lease_expires_at=None,
            batch_size=1,
            attempts=F("attempts") - 1,
            started_at=None,
        )
        for candidate_id in claimed:
            # Queued again: its running copy must go (its attempts went back,
            # so it is written over, not kept by the greater version).
            status_forget(candidate_id)
            job_announce(candidate_id)
        raise
    job.batch_size = 1 + len(claimed)
    for companion in found.values():
        _started(companion, batch_of=str(job.id))
    return [found[job_id] for job_id in claimed]
