"""Generation rules: every change to a job. Views, the API, the admin and
tasks call these; none re-implements them. Reads live in generation.selectors.

A job's life: job_submit (hold + create, task sent after commit) ->
job_claim (queued -> running, conditional) -> job_progress ... ->
job_succeed (capture) | job_fail (release, or requeue while attempts last) |
job_refuse_images (the image check flagged a result: release) | job_cancel
(release). A prompt that a moderation check refuses never becomes a job
(generation.moderation). Each end schedules the job's webhook, if it has one
(generation.webhooks). jobs_reap fails or requeues what a dead worker left and
sends again what the broker lost; every worker runs it (jobs_reap_if_due).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.files.base import ContentFile
from django.db import DatabaseError, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q
from django.db.models.functions import Now
from django.utils import timezone
from django_ratelimit.core import is_ratelimited
from PIL import Image

from billing.ledger import credits_capture, credits_hold, credits_release
from catalog.availability import (
    available_slugs,
    heartbeat_client,
    live_workers,
    runs_controlnet,
    worker_is_beating,
    worker_is_gone,
)
from catalog.controls import NEEDS_WEIGHTS, Preprocess, control_map
from catalog.families import FAMILIES
from catalog.limits import MAX_SIDE
from catalog.models import Checkpoint, ControlNet, Lora
from catalog.modes import Mode
from generation.affinity import reservations_orphaned
from generation.dispatch import (
    job_dispatch,
    job_received,
    job_redirect,
    job_stop_request,
    job_stop_requested,
    jobs_unsent,
)
from generation.errors import InvalidParams, JobFinished, ModelUnavailable, RateLimited, TooManyJobs
from generation.events import job_announce, job_send
from generation.images import CleanImage, control_picture, image_clean, mask_clean, outpaint_canvas, png_encode
from generation.metrics import reaper_observed
from generation.models import Job, JobImage
from generation.moderation import FLAGGED_IMAGE, image_flags_record, prompt_moderate
from generation.observe import job_event
from generation.params import (
    BATCH_FIELDS,
    EXPAND_FIELDS,
    JOB_FILES,
    MODE_RULES,
    ControlNetIn,
    ControlPreviewIn,
    Img2ImgIn,
    InpaintIn,
    JobParams,
    QuoteIn,
    Txt2ImgIn,
    job_params,
    mode_refusal,
    parse_loras,
)
from generation.pricing import quote
from generation.selectors import checkpoint_for_submit, fair_next, fair_queue, job_owned_by
from generation.status_cache import status_forget, status_progress
from generation.webhooks import webhook_schedule, webhook_url_check

log = logging.getLogger(__name__)
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


def job_quote(*, data: QuoteIn, upload=None, control_upload=None, user=None) -> int:
    """The credits a submit with these fields would hold (no prompt needed).
    A text to image quote ignores a picture (its submit takes none); only an
    inpainting quote reads expand_* (the other modes ignore them). The size
    comes from width and height, else the picture, else (ControlNet) the
    control picture, else `user`'s parent job's first result."""
    checkpoint = checkpoint_for_submit(data.model)
    takes_picture = MODE_RULES[Mode(data.mode)].picture != "none"
    size = _image_size(upload) if upload is not None and takes_picture else None
    control = None
    if data.mode == Mode.CONTROLNET and Mode.CONTROLNET in checkpoint.modes:
        control = _control_for(checkpoint, data.control)
        if size is None and control_upload is not None:
            size = _image_size(control_upload, field="control_image")
    if size is None and data.parent_job and user is not None and takes_picture:
        # Without a file, a submit starts from (or, ControlNet, is guided by)
        # the parent's first result: its size.
        first = job_owned_by(user=user, job_id=data.parent_job).images.first()
        size = (first.width, first.height) if first is not None else None
    loras = _loras_for(checkpoint, data.loras)
    # A ControlNet quote with a picture or a strength is its image to image
    # variant's (a submit takes a strength only with a picture).
    params = job_params(
        checkpoint=checkpoint,
        data=data,
        image_size=size,
        require_prompt=False,
        control=control,
        loras=loras,
        has_input=upload is not None or data.strength is not None,
    )
    return quote(checkpoint=checkpoint, params=params, control=control, loras=loras)


# --- Submit and cancel ------------------------------------------------------------


def job_submit(
    *,
    user,
    data: Img2ImgIn | Txt2ImgIn | InpaintIn | ControlNetIn,
    upload=None,
    mask_upload=None,
    control_upload=None,
) -> Job:
    """Validate everything (the prompts through the moderation checks, a
    webhook_url too: where it points now), hold the quoted credits and create
    the job in one transaction; the task is sent after commit. Any error
    leaves no job, no hold and no stored file (a refused prompt leaves a
    ModerationFlag row for staff).

    The mode is data's: image to image takes `upload` or, without one, the
    parent job's first result; text to image takes no picture (an upload is
    refused) and its parent is lineage only; inpainting takes a picture as
    image to image does and `mask_upload` (its size), or instead of the mask
    expand_* (outpainting: the canvas becomes the input, its new area the
    mask); ControlNet takes `control_upload` (or the parent job's first
    result) as its control picture and `upload`, if any, as the picture its
    image to image variant starts from."""
    if _submits_too_fast(user):
        raise RateLimited("Too many submissions; wait a minute and try again.")
    checkpoint = checkpoint_for_submit(data.model)
    parent = job_owned_by(user=user, job_id=data.parent_job) if data.parent_job else None
    control = control_source = None
    if MODE_RULES[data.mode].picture == "none":
        if upload is not None:
            raise InvalidParams({"image": NO_PICTURE})
        source = None
    elif data.mode == Mode.CONTROLNET:
        source = image_clean(upload) if upload is not None else None
        control, control_source = _control_input(checkpoint, data, parent, control_upload, source)
    else:
        source = _first_result(parent) if upload is None and parent is not None else image_clean(upload)
    # The picture's size (else the control picture's): outpainting's canvas
    # grows from it, and it is the default output size (job_params).
    sized = source or control_source
    size = (sized.width, sized.height) if sized is not None else None
    mask = None
    if data.mode == Mode.INPAINT:
        source, mask = _inpaint_input(checkpoint, data, source, mask_upload)
    loras = _loras_for(checkpoint, data.loras, submit=True)
    params = job_params(
        checkpoint=checkpoint, data=data, image_size=size, control=control, loras=loras, has_input=source is not None
    )
    prompt_moderate(user=user, texts={"prompt": params.prompt, "negative_prompt": params.negative_prompt})
    webhook_url = getattr(data, "webhook_url", None)  # a quote's fields have none
    if webhook_url:
        webhook_url_check(webhook_url, user=user)
    if checkpoint.slug not in available_slugs():
        raise ModelUnavailable(f"No worker can run {checkpoint.name} right now.", fields={"model": "unavailable"})
    _check_active_jobs(user)

    job = Job(
        id=uuid.uuid4(),
        user=user,
        checkpoint=checkpoint,
        parent=parent,
        webhook_url=webhook_url or "",
        controlnet=control,
        **params.model_dump(exclude={"control"}),
    )
    job.credits_held = quote(checkpoint=checkpoint, params=params, control=control, loras=loras)
    if source is not None:
        job.input_image.save("input.png", ContentFile(source.png), save=False)
    if mask is not None:
        job.mask.save("mask.png", ContentFile(mask.png), save=False)
    if control_source is not None:
        job.control_image.save("control.png", ContentFile(control_source.png), save=False)
    try:
        with transaction.atomic():
            credits_hold(user=user, amount=job.credits_held, ref=job.hold_ref, memo=f"{checkpoint.name} job")
            # Again under the account's row lock that the hold took: concurrent
            # submits of one person are serialized here, so the cap holds.
            _check_active_jobs(user)
            job.save(force_insert=True)
    except Exception:
        for field in JOB_FILES:
            if stored := getattr(job, field):
                stored.delete(save=False)
        raise
    job_event(
        "submitted", job, mode=job.mode, num_images=job.num_images, steps=job.steps, width=job.width, height=job.height
    )
    # Outside the try: the job and its hold are committed, so its input must
    # stay. A publish that fails is logged; the sweep in jobs_reap sends it.
    transaction.on_commit(lambda: job_dispatch(job_id=job.id, slug=checkpoint.slug), robust=True)
    return job


def _inpaint_input(checkpoint, data: InpaintIn, source: CleanImage, mask_upload) -> tuple[CleanImage, CleanImage]:
    """Inpainting's input and mask: the picture and its checked mask, or
    (outpainting) the grown canvas and its new area. The model is checked
    first: a model without inpainting is the error to give."""
    if Mode.INPAINT not in checkpoint.modes:
        raise InvalidParams({"model": mode_refusal(checkpoint, Mode.INPAINT)})
    if mask_upload is not None and data.expands:
        raise InvalidParams({"mask": MASK_OR_EXPAND, **dict.fromkeys(EXPAND_FIELDS, MASK_OR_EXPAND)})
    if mask_upload is None and not data.expands:
        raise InvalidParams({"mask": NO_MASK})
    if mask_upload is not None:
        return source, mask_clean(mask_upload, size=(source.width, source.height))
    # The canvas's size limit is job_params' (it names the expand_* fields):
    # a canvas too large is refused there, before anything is stored.
    return outpaint_canvas(
        source, left=data.expand_left, right=data.expand_right, top=data.expand_top, bottom=data.expand_bottom
    )


def _control_input(
    checkpoint, data: ControlNetIn, parent: Job | None, control_upload, source: CleanImage | None
) -> tuple[ControlNet, CleanImage]:
    """ControlNet's network and control picture: the upload, else the
    parent's first result, else the picture itself (which then both guides
    the structure and seeds the colours). The model is checked first (a
    model without ControlNet is the error to give), then the network, then
    the pictures. A strength applies to a picture only."""
    if Mode.CONTROLNET not in checkpoint.modes:
        raise InvalidParams({"model": mode_refusal(checkpoint, Mode.CONTROLNET)})
    control = _control_for(checkpoint, data.control, preprocess=data.preprocess, submit=True)
    if source is None and data.strength is not None:
        raise InvalidParams({"strength": NO_PICTURE_STRENGTH})
    if control_upload is not None:
        # Flattened on black: a transparent map's background is black.
        return control, image_clean(control_upload, field="control_image", background=(0, 0, 0))
    if parent is not None:
        return control, _first_result(parent)
    if source is not None:
        return control, source
    raise InvalidParams({"control_image": NO_CONTROL_IMAGE})


def control_preview(*, data: ControlPreviewIn, upload) -> bytes:
    """The map a weight-free preprocess makes of `upload` (PNG bytes), as a
    worker makes it: at the output size when one is given, else within the
    largest side an output can have."""
    if (data.width is None) != (data.height is None):
        raise InvalidParams({"width": "Give both width and height, or neither."})
    # Resampled once: to the output size, else within the largest side.
    picture = control_picture(upload, largest=None if data.width is not None else MAX_SIDE)
    if data.width is not None:
        picture = picture.resize((data.width, data.height), Image.Resampling.LANCZOS)
    return png_encode(control_map(picture, data.preprocess))


def _control_for(checkpoint, slug: str | None, *, preprocess: str | None = None, submit: bool = False) -> ControlNet:
    """The enabled ControlNet `slug`, if it fits `checkpoint`; for a submit,
    also one a live worker has the weights of, with a preprocess a live
    worker can run (an annotator that needs weights only where they are)."""
    if not slug:
        raise InvalidParams({"control": NO_CONTROL})
    control = ControlNet.objects.filter(slug=slug, enabled=True).first()
    if control is None:
        raise InvalidParams({"control": f"There is no ControlNet {slug!r}. {NO_CONTROL}"})
    if not control.fits(checkpoint):
        family = FAMILIES[control.family].label
        raise InvalidParams(
            {
                "control": f"{control.name} is made for {family} models; {checkpoint.name} is "
                f"{FAMILIES[checkpoint.family].label}. {NO_CONTROL}"
            }
        )
    if not submit:
        return control
    # One read of the heartbeats: a worker that serves the model must have
    # the network (and the annotator a preprocess needs).
    workers = live_workers()
    if not any(checkpoint.slug in worker.get("serves", []) for worker in workers):
        raise ModelUnavailable(f"No worker can run {checkpoint.name} right now.", fields={"model": "unavailable"})
    preprocess = preprocess or control.kind
    weighted = preprocess in NEEDS_WEIGHTS
    if weighted and not any(preprocess in worker.get("annotators", []) for worker in workers):
        label = Preprocess(preprocess).label.split(" (")[0].lower()
        raise InvalidParams(
            {
                "preprocess": f"{label} needs its annotator's weights, which this service does not have; send "
                f"a ready {label} map with preprocess=none, or use canny or scribble."
            }
        )
    annotator = preprocess if weighted else None
    if not any(runs_controlnet(w, slug=checkpoint.slug, control=control.slug, annotator=annotator) for w in workers):
        raise ModelUnavailable(
            f"No worker can run {control.name} with {checkpoint.name} right now.",
            fields={"control": "unavailable (no worker serving this model has it now)"},
        )
    return control


def _loras_for(checkpoint, text: str | None, *, submit: bool = False) -> list[tuple[Lora, float]]:
    """The LoRAs `text` names (generation.params.parse_loras) with their
    weights, each enabled and made for `checkpoint`'s architecture; for a
    submit, also one a live worker has the file of."""
    parsed = parse_loras(text)
    if not parsed:
        return []
    rows = {lora.slug: lora for lora in Lora.objects.filter(slug__in=[slug for slug, _ in parsed], enabled=True)}
    chosen = []
    for slug, weight in parsed:
        lora = rows.get(slug)
        if lora is None:
            raise InvalidParams({"loras": f"There is no LoRA {slug!r}; GET /api/v1/models lists those of each model."})
        if not lora.fits(checkpoint):
            raise InvalidParams(
                {
                    "loras": f"{lora.name} is made for {FAMILIES[lora.family].label} models; {checkpoint.name} is "
                    f"{FAMILIES[checkpoint.family].label}."
                }
            )
        chosen.append((lora, lora.default_weight if weight is None else weight))
    if submit:
        # A worker that serves the model must have every one of them (the
        # claim takes the job only for such a worker: Abilities).
        wanted = {lora.slug for lora, _ in chosen}
        serving = [w for w in live_workers() if checkpoint.slug in w.get("serves", [])]
        if not any(wanted <= set(worker.get("loras", [])) for worker in serving):
            have = set().union(*(worker.get("loras", []) for worker in serving)) if serving else set()
            lora = next((lora for lora, _ in chosen if lora.slug not in have), chosen[0][0])
            raise ModelUnavailable(
                f"No worker serving {checkpoint.name} has {lora.name} right now.",
                fields={"loras": f"{lora.slug}: unavailable"},
            )
    return chosen


def job_again(*, user, job_id) -> Job:
    """The same job with a new random seed: a sibling with the same input
    (text to image: the same prompt and settings; inpainting: the same
    mask, and an outpainting's canvas and mask, so it is inpainted again;
    ControlNet: the same control picture)."""
    job = job_owned_by(user=user, job_id=job_id)
    data = JobParams.of(job).again(model=job.checkpoint.slug, parent_job=job.parent_id)
    rules = MODE_RULES[job.mode]
    if not rules.files:
        return job_submit(user=user, data=data)
    if job.expired_at is not None:
        raise InvalidParams({"job": _expired_message()})
    if rules.picture == "optional" and not job.input_image:
        data = data.model_copy(update={"strength": None})  # from the prompt alone: no strength
    try:
        uploads = {_SUBMIT_UPLOADS[field]: _copy_of(getattr(job, field), f"{field}.png") for field in rules.files}
    except FileNotFoundError:  # retention deleted it since the read
        raise InvalidParams({"job": _expired_message()}) from None
    return job_submit(user=user, data=data, **uploads)


# job_submit's argument for each of a job's files.
_SUBMIT_UPLOADS = {"input_image": "upload", "mask": "mask_upload", "control_image": "control_upload"}


def _copy_of(field, name: str) -> ContentFile | None:
    """A stored file of a job as an upload again; None where it has none."""
    if not field:
        return None
    with field.open("rb") as handle:
        return ContentFile(handle.read(), name=name)


def job_cancel(*, user, job_id) -> Job:
    """Cancel a queued or running job and release its hold. Canceling a
    canceled job returns it; a finished one is a conflict."""
    job = job_owned_by(user=user, job_id=job_id)
    with transaction.atomic():
        canceled = Job.objects.filter(id=job.id, status__in=Job.ACTIVE).update(
            status=Status.CANCELED,
            finished_at=timezone.now(),
            lease_expires_at=None,
            error_code="canceled",
            error="Canceled. The held credits were returned.",
        )
        if canceled:
            credits_release(hold_ref=job.hold_ref, ref=job.release_ref, memo="canceled")
            _ended(job)
            # Now, not after the commit: the signal only makes the worker
            # look at the row, where a rolled-back cancel is not seen.
            job_stop_request(job.id)
    if canceled:
        job_event("canceled", job, credits_released=job.credits_held)
    job.refresh_from_db()
    if not canceled and job.status != Status.CANCELED:
        raise JobFinished(f"The job already {job.status}.")
    return job


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


# --- Test loads (admin) -------------------------------------------------------------


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
