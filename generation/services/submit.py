"""Submit, quote, again and cancel: every way a person makes or stops a job."""

from __future__ import annotations

import uuid

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from PIL import Image

from billing.ledger import credits_hold, credits_release
from catalog.availability import (
    available_slugs,
    live_workers,
    runs_controlnet,
)
from catalog.controls import NEEDS_WEIGHTS, Preprocess, control_map
from catalog.families import FAMILIES
from catalog.limits import MAX_SIDE
from catalog.models import ControlNet, Lora
from catalog.modes import Mode
from generation.dispatch import (
    job_dispatch,
    job_stop_request,
)
from generation.errors import InvalidParams, JobFinished, ModelUnavailable, RateLimited
from generation.images import CleanImage, control_picture, image_clean, mask_clean, outpaint_canvas, png_encode
from generation.models import Job
from generation.moderation import prompt_moderate
from generation.observe import job_event
from generation.params import (
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
from generation.selectors import checkpoint_for_submit, job_owned_by
from generation.services._common import (
    MASK_OR_EXPAND,
    NO_CONTROL,
    NO_CONTROL_IMAGE,
    NO_MASK,
    NO_PICTURE,
    NO_PICTURE_STRENGTH,
    Status,
    _check_active_jobs,
    _ended,
    _expired_message,
    _first_result,
    _image_size,
    _submits_too_fast,
)
from generation.webhooks import webhook_url_check


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
