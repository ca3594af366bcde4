"""The parameters of a job, in one place.

- `QuoteIn` / `Img2ImgIn` / `Txt2ImgIn` / `InpaintIn` / `ControlNetIn`: what a person sends (the API's
  form fields and the create page's form), with the limits that hold for
  every model published in the OpenAPI schema. A submit's mode
  (catalog.modes) is its class's; a quote's is a field.
- `job_params()`: applies a checkpoint's defaults and own limits and returns
  `JobParams`, the resolved values a job stores, a worker runs, "again"
  repeats, the create page prefills and the job output shows.
- `denoising_steps()`: the steps img2img really runs, for pricing and the
  worker alike.
- `IdempotencyKeyHeader`: the `Idempotency-Key` header of the operations that
  create a job (generation.idempotency).
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, Self
from uuid import UUID

from django.conf import settings
from ninja import Schema
from ninja.schema import DjangoGetter
from pydantic import ConfigDict, Field, ValidationError, field_serializer, model_validator
from pydantic.json_schema import SkipJsonSchema

from catalog.controls import WEIGHT_FREE, Preprocess
from catalog.families import FAMILIES
from catalog.limits import MAX_GUIDANCE, MAX_IMAGES, MAX_SEED, MAX_SIDE, MAX_STEPS, MIN_SIDE, SIZE_MULTIPLE
from catalog.modes import Mode
from catalog.samplers import SAMPLERS
from generation.errors import InvalidParams
from generation.limits import WEBHOOK_URL_MAX

# A form field left out means "the model's default"; the schema does not
# offer null, which a form cannot send.
Omitted = SkipJsonSchema[None]
# Fields whose empty value is refused rather than taken as "the default".
CHOICES = {"mode"}
Strength = Annotated[float, Field(gt=0, le=1)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
Guidance = Annotated[float, Field(ge=0, le=MAX_GUIDANCE)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Side = Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE, multiple_of=SIZE_MULTIPLE)]
Expand = Annotated[int, Field(ge=0, le=MAX_SIDE, multiple_of=SIZE_MULTIPLE)]
MAX_MASK_BLUR = 64
HiresScale = Annotated[float, Field(ge=1, le=2)]
ConditioningScale = Annotated[float, Field(ge=0, le=2)]
ControlFraction = Annotated[float, Field(ge=0, le=1)]
# catalog.controls.Preprocess's names, all of them or the weight-free ones.
PreprocessName = Literal[tuple(Preprocess.values)]
SamplerName = Literal[tuple(SAMPLERS)]
WeightFreeName = Literal[tuple(p.value for p in Preprocess if p in WEIGHT_FREE)]
# Outpainting's sides, in the order their errors are named.
EXPAND_FIELDS = ("expand_left", "expand_right", "expand_top", "expand_bottom")
SLUG_PATTERN = r"^[-a-zA-Z0-9_]+$"
LORAS_MAX_CHARS = 400
# The hires pass's strength when a job asks for the pass without one (A1111's
# "denoising strength" default for its hires fix is 0.7; 0.5 keeps more of
# the first pass, which the person chose it for).
HIRES_STRENGTH = 0.5
ControlSlug = Annotated[str, Field(min_length=1, max_length=80, pattern=SLUG_PATTERN)]
# "Has a character that is not whitespace", the same in Python's str.strip(),
# in the validator's (Rust) regex engine, which differs from it on \x1c-\x1f,
# and in a JSON Schema reader's (ECMA-262) \s, which leaves out \x85 (NEL).
VISIBLE_TEXT = r"[^\s\x1c-\x1f\x85]"
# http:// or https://, any case (a JSON Schema pattern has no flags).
WEBHOOK_URL_PATTERN = r"^[hH][tT][tT][pP][sS]?://"

# The Idempotency-Key header of the job-creating operations (generation.idempotency):
# 1 to 255 printable ASCII characters, what any HTTP stack carries unchanged.
IDEMPOTENCY_KEY = "Idempotency-Key"
IdempotencyKeyHeader = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x20-\x7e]+$")]

# What each field accepts, in words: the one message for a bad value,
# whether the schema or a model's own limits refused it.
FIELD_HELP = {
    "model": "Choose a model (its slug, see GET /api/v1/models).",
    "prompt": f"Describe what the picture should become, in at most {settings.PROMPT_MAX_CHARS} characters.",
    "negative_prompt": f"At most {settings.PROMPT_MAX_CHARS} characters.",
    "strength": "Between 0 (exclusive) and 1.",
    "steps": f"Between 1 and {MAX_STEPS}.",
    "guidance_scale": f"Between 0 and {MAX_GUIDANCE:g}.",
    "seed": f"Between 0 and {MAX_SEED}.",
    "loras": "Up to 4 LoRAs that fit the model, as slug:weight separated by commas (weight -2 to 2; a bare "
    "slug takes its default weight), see GET /api/v1/models: loras.",
    "hires_scale": "From 1 to 2: text to image and image to image run a second, image to image pass at this many "
    "times the size (the picture comes out that much larger, within the model's max side).",
    "hires_strength": "Between 0 (exclusive) and 1: how much the hires pass changes the enlarged picture; needs "
    "hires_scale above 1.",
    "scheduler": "A sampler the model lists (GET /api/v1/models: schedulers): " + ", ".join(SAMPLERS) + ".",
    "num_images": f"Between 1 and {MAX_IMAGES}.",
    "width": f"A multiple of {SIZE_MULTIPLE} between {MIN_SIDE} and {MAX_SIDE}.",
    "height": f"A multiple of {SIZE_MULTIPLE} between {MIN_SIDE} and {MAX_SIDE}.",
    "parent_job": "The id of one of your jobs.",
    "mask_blur": f"Between 0 and {MAX_MASK_BLUR} pixels.",
    **dict.fromkeys(
        EXPAND_FIELDS, f"A multiple of {SIZE_MULTIPLE} from 0, the new canvas within the model's max side."
    ),
    IDEMPOTENCY_KEY: "1 to 255 printable ASCII characters; a new random one (a UUID) for each new request.",
    "webhook_url": f"An http:// or https:// URL of a public host, at most {WEBHOOK_URL_MAX} characters.",
}


def _empty_is_allowed(schema: dict, model: type[Schema]) -> None:
    """The schema of a form: every optional field but a choice also takes
    the empty string, which means "not given" (FormIn)."""
    for name, prop in schema.get("properties", {}).items():
        field = model.model_fields.get(name)
        if field is None or field.is_required() or name in CHOICES:
            continue
        meta = {key: prop.pop(key) for key in ("title", "description", "default") if key in prop}
        schema["properties"][name] = {"anyOf": [prop, {"type": "string", "maxLength": 0}], **meta}


class FormIn(Schema):
    """Form fields. HTML forms and most HTTP clients send an optional field
    left blank as an empty value: it means "not given" (the default), except
    for a choice such as the quote's mode, where an empty value is no choice
    (400, as the schema says)."""

    model_config = ConfigDict(json_schema_extra=_empty_is_allowed)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_not_given(cls, data):
        # ninja's Schema hands its validators the input wrapped (DjangoGetter).
        data = data._obj if isinstance(data, DjangoGetter) else data
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            key: value
            for key, value in data.items()
            if not (value == "" and key in fields and not fields[key].is_required() and key not in CHOICES)
        }


class _SettingsIn(FormIn):
    """The fields every mode shares. Limits that depend on the model are
    checked by job_params."""

    model: str = Field(
        min_length=1, max_length=80, pattern=SLUG_PATTERN, description="Checkpoint slug, see GET /api/v1/models"
    )
    prompt: str = Field("", max_length=settings.PROMPT_MAX_CHARS, description="What the picture should become")
    negative_prompt: str = Field("", max_length=settings.PROMPT_MAX_CHARS, description="What to avoid")
    steps: Steps | Omitted = Field(None, description="Default: the model's; at most its max steps")
    guidance_scale: Guidance | Omitted = Field(None, description="Default: the model's")
    seed: Seed | Omitted = Field(None, description="Same seed, settings and model: the same picture")
    scheduler: SamplerName | Omitted = Field(
        None, description="The sampler, one of the model's `schedulers`; default: its `default_scheduler`"
    )
    loras: str | Omitted = Field(
        None,
        max_length=LORAS_MAX_CHARS,
        description="Up to 4 LoRAs that fit the model (GET /api/v1/models: loras), as slug:weight separated by "
        "commas, weight -2 to 2 (a bare slug takes its default weight), e.g. `ink:0.8,film`; each may add to the price",
    )
    hires_scale: HiresScale | Omitted = Field(
        None,
        description="txt2img and img2img: above 1, a second (image to image) pass at this many times the size "
        "(A1111's hires fix): the picture comes out that much larger; priced as both passes",
    )
    hires_strength: Strength | Omitted = Field(
        None, description=f"With hires_scale: how much the second pass changes, 0-1; default {HIRES_STRENGTH}"
    )
    num_images: int = Field(1, ge=1, le=MAX_IMAGES)
    width: Side | Omitted = Field(None, description="Default: the input's, fitted to the model")
    height: Side | Omitted = Field(None, description="Default: the input's, fitted to the model")
    parent_job: UUID | Omitted = Field(None, description="Iterate on this job of yours (its first result is the input)")

    @classmethod
    def from_form(cls, data) -> Self:
        """From a form: empty (or missing) fields mean "the default", except
        a choice such as the quote's mode, where an empty value is no choice
        (400, as the schema says)."""
        try:
            return cls.model_validate(
                {key: value for key, value in data.items() if value is not None and (value != "" or key in CHOICES)}
            )
        except ValidationError as exc:
            raise invalid_params(exc.errors()) from None


class _SubmitIn(_SettingsIn):
    """What a submit adds to the settings: a prompt is needed, a webhook may be."""

    prompt: str = Field(
        min_length=1,
        max_length=settings.PROMPT_MAX_CHARS,
        pattern=VISIBLE_TEXT,
        description="What the picture should become",
    )
    webhook_url: str | Omitted = Field(
        None,
        max_length=WEBHOOK_URL_MAX,
        pattern=WEBHOOK_URL_PATTERN,
        description="Called (POST, the job's JSON, signed per Standard Webhooks with your secret from "
        "GET /api/v1/webhooks/secret) when the job succeeds, fails or is canceled. Its host must resolve "
        "to public addresses only.",
    )


class _OutpaintIn(FormIn):
    """Outpainting: pixels added on each side of the picture; the new area
    is the mask (generation.images.outpaint_canvas)."""

    expand_left: Expand = Field(0, description="Outpainting: pixels added on the left (a multiple of 8)")
    expand_right: Expand = Field(0, description="Outpainting: pixels added on the right (a multiple of 8)")
    expand_top: Expand = Field(0, description="Outpainting: pixels added on the top (a multiple of 8)")
    expand_bottom: Expand = Field(0, description="Outpainting: pixels added on the bottom (a multiple of 8)")

    @property
    def expands(self) -> bool:
        return any(getattr(self, name) for name in EXPAND_FIELDS)


class QuoteIn(_SettingsIn, _OutpaintIn):
    """Form fields of POST /api/v1/quote: those of the mode's submit, without
    the need for a prompt."""

    mode: Literal["img2img", "txt2img", "inpaint", "controlnet"] = Field(
        "img2img",
        description="img2img (with a picture), txt2img (from the prompt alone; no strength), inpaint "
        "(with a picture; outpainting: with expand_*, priced at the larger canvas) or controlnet (with `control`; "
        "with `image` or `strength`: its image to image variant, else every step runs; sized by `image`, else "
        "`control_image`)",
    )
    strength: Strength | Omitted = Field(
        None,
        description="img2img, inpaint and controlnet with a picture: how much to change, 0-1; default: the "
        "model's (inpaint: 1)",
    )
    control: ControlSlug | Omitted = Field(
        None, description="controlnet: the ControlNet's slug (its network adds to the price)"
    )
    control_start: ControlFraction = Field(0.0, description="controlnet: as the submit's")
    control_end: ControlFraction = Field(1.0, description="controlnet: as the submit's")


class Img2ImgIn(_SubmitIn):
    """Form fields of POST /api/v1/img2img and of the create page's image to image."""

    mode: ClassVar[Mode] = Mode.IMG2IMG
    strength: Strength | Omitted = Field(None, description="How much to change, 0-1; default: the model's")


class Txt2ImgIn(_SubmitIn):
    """Form fields of POST /api/v1/txt2img and of the create page's text to
    image: no picture and no strength (every step runs)."""

    mode: ClassVar[Mode] = Mode.TXT2IMG
    width: Side | Omitted = Field(None, description="Default: the model's native size (GET /api/v1/models)")
    height: Side | Omitted = Field(None, description="Default: the model's native size (GET /api/v1/models)")
    parent_job: UUID | Omitted = Field(None, description="Iterate on this job of yours (its picture is not used)")


class InpaintIn(_SubmitIn, _OutpaintIn):
    """Form fields of POST /api/v1/inpaint: the picture changes only where
    its mask is white, or (outpainting, expand_* instead of a mask) only in
    the area added around it."""

    mode: ClassVar[Mode] = Mode.INPAINT
    strength: Strength | Omitted = Field(
        None, description="How much the masked area changes, 0-1; default 1 (repainted from noise)"
    )
    mask_blur: int = Field(
        4, ge=0, le=MAX_MASK_BLUR, description="Soft edge of the mask, pixels (a Gaussian blur's radius)"
    )
    width: Side | Omitted = Field(None, description="Default: the picture's (or canvas's), fitted to the model")
    height: Side | Omitted = Field(None, description="Default: the picture's (or canvas's), fitted to the model")


class ControlNetIn(_SubmitIn):
    """Form fields of POST /api/v1/controlnet: a control picture whose
    structure a ControlNet keeps (`control_image`, or `parent_job`'s first
    result), and optionally a picture to start from (`image`: the image to
    image variant)."""

    mode: ClassVar[Mode] = Mode.CONTROLNET
    control: ControlSlug = Field(
        description="The ControlNet's slug (GET /api/v1/models lists those that fit each model)"
    )
    preprocess: PreprocessName | Omitted = Field(
        None,
        description="How the control picture becomes the ControlNet's map: none (it is the map), canny (edges), "
        "scribble (a drawing), depth, openpose or lineart (annotators with weights: only where a worker has "
        "them); default: the ControlNet's own kind",
    )
    conditioning_scale: ConditioningScale = Field(1.0, description="How strongly the map guides, 0-2")
    control_start: ControlFraction = Field(0.0, description="From this fraction of the steps the map guides")
    control_end: ControlFraction = Field(1.0, description="Up to this fraction of the steps; above control_start")
    strength: Strength | Omitted = Field(
        None,
        description="With `image` (the image to image variant): how much to change, 0-1, default the model's; "
        "without `image` every step runs and a strength is refused",
    )
    width: Side | Omitted = Field(None, description="Default: the picture's (else the control picture's), fitted")
    height: Side | Omitted = Field(None, description="Default: the picture's (else the control picture's), fitted")
    parent_job: UUID | Omitted = Field(
        None, description="Iterate on this job of yours: its first result is the control picture when none is sent"
    )


class ControlPreviewIn(FormIn):
    """Form fields of POST /api/v1/controlnet/preview."""

    preprocess: WeightFreeName = Field(
        "canny", description="A preprocess that needs no weights (the others run on workers only)"
    )
    width: Side | Omitted = Field(None, description="With height: the map at this size (the job's output size)")
    height: Side | Omitted = Field(None, description="With width: the map at this size")


# A job's private files (Job's file fields: served to its owner only,
# deleted by retention), in the order a submit stores them.
JOB_FILES = ("input_image", "mask", "control_image")


@dataclass(frozen=True)
class ModeRules:
    """What one mode of generation is, for every layer that asks (params,
    the create page, the services, retention and the worker): a new mode is
    a new entry in MODE_RULES, not new branches."""

    form: type[_SubmitIn]  # its submit's fields (the API's and the create page's)
    files: tuple[str, ...]  # the JOB_FILES a job of it may keep
    # Its input picture: "none" (from the prompt), "required", or "optional"
    # (ControlNet: with one it is its image to image variant).
    picture: Literal["none", "required", "optional"]
    batches: bool  # may share a pipeline call with other people's jobs
    hires: bool  # takes a hires pass


MODE_RULES: dict[Mode, ModeRules] = {
    Mode.IMG2IMG: ModeRules(Img2ImgIn, ("input_image",), picture="required", batches=True, hires=True),
    Mode.TXT2IMG: ModeRules(Txt2ImgIn, (), picture="none", batches=True, hires=True),
    # Each inpainting job has its own mask, each ControlNet job its network
    # and map: they run alone (diffusers takes a mask or a map per row, but
    # a batch of them is not worth its tests).
    Mode.INPAINT: ModeRules(InpaintIn, ("input_image", "mask"), picture="required", batches=False, hires=False),
    Mode.CONTROLNET: ModeRules(
        ControlNetIn, ("input_image", "control_image"), picture="optional", batches=False, hires=False
    ),
}
SUBMIT_FORMS: dict[str, type[_SubmitIn]] = {mode: rules.form for mode, rules in MODE_RULES.items()}


class LoraWeight(Schema):
    """One LoRA of a job and its weight."""

    model_config = ConfigDict(frozen=True)

    slug: str
    weight: float


class JobParams(Schema):
    """The resolved settings of a job: the model's defaults applied, every
    limit checked. A job row holds these fields; the job output shows them."""

    model_config = ConfigDict(frozen=True)

    mode: Mode = Field(
        Mode.IMG2IMG,
        description="img2img: from a picture; txt2img: from the prompt alone; inpaint: a picture changed "
        "where its mask is white (outpainting too: its canvas is the input)",
    )
    prompt: str
    negative_prompt: str
    strength: float
    steps: int
    guidance_scale: float
    scheduler: str = Field(
        "", description="The sampler it ran with; empty for jobs made before samplers existed (the model's own)"
    )
    loras: tuple[LoraWeight, ...] = Field((), description="Its LoRAs and their weights, in the order given")
    hires_scale: float = Field(1.0, description="Above 1: the hires pass's factor (1: no hires pass)")
    hires_strength: float = Field(0.0, description="The hires pass's strength (0: no hires pass)")
    seed: int
    num_images: int
    width: int = Field(description="The (first pass's) size; with a hires pass the pictures are `hires`'s")
    height: int
    mask_blur: int = Field(0, description="inpaint: the mask's soft edge, pixels; 0 for the other modes")
    control: str = Field("", description="controlnet: the ControlNet's slug; empty for the other modes")
    preprocess: str = Field("", description="controlnet: how its control picture became the map")
    conditioning_scale: float = Field(1.0, description="controlnet: how strongly the map guides")
    control_start: float = Field(0.0, description="controlnet: the fraction of the steps where guidance starts")
    control_end: float = Field(1.0, description="controlnet: the fraction of the steps where it ends")

    @field_serializer("loras")
    def _loras_as_list(self, loras: tuple[LoraWeight, ...]) -> list[dict]:
        # A list, as the job's JSON field stores it and reads it back.
        return [lora.model_dump() for lora in loras]

    @classmethod
    def of(cls, job) -> JobParams:
        return cls.model_validate(job, from_attributes=True)

    @property
    def denoising_steps(self) -> int:
        return denoising_steps(self.steps, self.strength)

    @property
    def batch_key(self) -> tuple:
        """What jobs of one checkpoint must share to run in one pipeline
        call: BATCH_FIELDS, and a negative prompt on both or on neither."""
        return (*(getattr(self, field) for field in BATCH_FIELDS), bool(self.negative_prompt), self.loras)

    @property
    def has_hires(self) -> bool:
        return self.hires_scale > 1

    @property
    def output_size(self) -> tuple[int, int]:
        """The pictures' size: width x height, times hires_scale with a hires pass."""
        return hires_size(self.width, self.height, self.hires_scale) if self.has_hires else (self.width, self.height)

    @property
    def hires_steps(self) -> int:
        """Denoising steps of the hires pass (0 without one)."""
        return denoising_steps(self.steps, self.hires_strength) if self.has_hires else 0

    @property
    def total_steps(self) -> int:
        """Every denoising step the job runs: both passes."""
        return self.denoising_steps + self.hires_steps

    @property
    def loras_text(self) -> str:
        """Its LoRAs as a form writes them (slug:weight,...)."""
        return ",".join(f"{lora.slug}:{lora.weight!r}" for lora in self.loras)

    def again(self, *, model: str, parent_job) -> _SubmitIn:
        """The same request (same mode) with a new random seed ("again").
        InvalidParams if it no longer passes today's limits."""
        form = SUBMIT_FORMS[self.mode]
        fields = self.model_dump(include=set(form.model_fields) - {"seed"})
        fields["loras"] = self.loras_text
        if not self.has_hires:
            fields.pop("hires_scale", None), fields.pop("hires_strength", None)
        return form.from_form({**fields, "model": model, "parent_job": parent_job})

    def prefill(self, *, model: str, parent_job) -> dict:
        """The create page's fields for iterating on a job: image to image
        from its result, whatever its mode, with its settings, a new seed and
        the size of the new input. A text to image or inpainting job ran at
        its own strength: the next one starts from the model's default instead."""
        # Its result is the next input: at its size, with no second hires pass.
        exclude = {"mode", "seed", "width", "height", "mask_blur", "hires_scale", "hires_strength", *CONTROL_FIELDS} | (
            {"strength"} if self.mode != Mode.IMG2IMG else set()
        )
        return {
            "mode": Mode.IMG2IMG.value,
            "model": model,
            "parent_job": parent_job,
            **self.model_dump(exclude=exclude),
            "loras": self.loras_text,
        }


# Batching across people (workers.runtime.run_batch): what jobs of one
# checkpoint must share to run in one pipeline call, the mode (one pipeline
# per call), the size and the denoising schedule (the sampler too), besides
# having a negative prompt or not (SDXL runs "no negative prompt" on zeros,
# not on ""). Prompts, seeds, inputs and image
# counts may differ. generation.services.job_claim_companions finds such jobs.
BATCH_FIELDS = (
    "mode",
    "width",
    "height",
    "steps",
    "strength",
    "guidance_scale",
    "scheduler",
    "hires_scale",
    "hires_strength",
)

# ControlNet's settings (a job of another mode has their defaults).
CONTROL_FIELDS = ("control", "preprocess", "conditioning_scale", "control_start", "control_end")

INPUT_FIELDS = {
    *Img2ImgIn.model_fields,
    *QuoteIn.model_fields,
    *InpaintIn.model_fields,
    *ControlNetIn.model_fields,
    "image",
    "mask",
    "control_image",
    "page",
    IDEMPOTENCY_KEY,
}
# A text to image job runs every step: its strength is 1 (diffusers'
# text-to-image pipelines have none), which prices it at all its steps.
FULL_STRENGTH = 1.0


def denoising_steps(steps: int, strength: float) -> int:
    """Steps img2img actually runs (diffusers' get_timesteps); at strength 1
    (text to image), every step."""
    return min(int(steps * strength), steps)


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The hires pass's size: width x height times `scale`, in multiples of 8."""
    return (
        int(width * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE,
        int(height * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE,
    )


def fewest_steps(*, strength: float) -> int:
    """The fewest steps that run at least one denoising step at `strength`."""
    steps = max(1, math.ceil(1 / strength))
    while denoising_steps(steps, strength) < 1:
        steps += 1
    return steps


def invalid_params(errors: list[dict]) -> InvalidParams:
    """Pydantic's errors as our field messages. A location may name where the
    value came from ("form") and a member of a union after the field."""
    fields = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())] or ["?"]
        name = next((part for part in loc if part in INPUT_FIELDS), loc[-1])
        fields[name] = FIELD_HELP.get(name, error.get("msg", "Not valid."))
    return InvalidParams(fields)


def job_params(
    *,
    checkpoint,
    data: _SettingsIn,
    image_size: tuple[int, int] | None,
    require_prompt: bool = True,
    control=None,
    loras: list[tuple[object, float]] = (),
    has_input: bool = True,
) -> JobParams:
    """Apply the model's defaults and limits; raise InvalidParams listing
    every field that is wrong. The mode is data.mode; a text to image job
    (no image_size) runs every step at the model's native size by default.
    A ControlNet job names its `control` (a ControlNet row, checked by the
    caller); without an input picture (`has_input` False) it runs every step.
    `loras` are the job's (Lora row, weight) pairs, parsed by parse_loras and
    checked against the catalog by the caller."""
    errors: dict[str, str] = {}
    mode = Mode(data.mode)
    if mode not in checkpoint.modes:
        errors["model"] = mode_refusal(checkpoint, mode)
    prompt = data.prompt.strip()
    if require_prompt and not prompt:
        errors["prompt"] = FIELD_HELP["prompt"]
    control_settings = _control_settings(data, control, errors) if mode == Mode.CONTROLNET else {}
    if (
        mode == Mode.TXT2IMG
        or (mode == Mode.INPAINT and data.strength is None)
        or (mode == Mode.CONTROLNET and not has_input)
    ):
        strength = FULL_STRENGTH
    else:
        strength = checkpoint.default_strength if data.strength is None else data.strength
    scheduler = checkpoint.scheduler_default if data.scheduler is None else data.scheduler
    if scheduler not in checkpoint.schedulers:
        errors["scheduler"] = f"{checkpoint.name} offers " + ", ".join(checkpoint.schedulers) + "."
    steps = checkpoint.default_steps if data.steps is None else data.steps
    if steps > checkpoint.max_steps:
        errors["steps"] = f"Between 1 and {checkpoint.max_steps} for this model."
    elif denoising_steps(steps, strength) < 1:
        errors["strength"] = "Steps x strength must be at least 1; raise one of them."
    # Without a picture or a size: text to image's native size; a quote of
    # image to image, a 512 px input.
    default_side = FAMILIES[checkpoint.family].native_side if mode == Mode.TXT2IMG else 512
    if mode == Mode.INPAINT and data.expands:
        # Outpainting: the canvas is the input, within the model's max side.
        image_size, canvas_error = _canvas(checkpoint, data, image_size or (default_side, default_side))
        errors.update(canvas_error)
    width, height, size_error = _output_size(checkpoint, data.width, data.height, image_size, default_side)
    if size_error:
        errors["width"] = size_error
    hires_scale, hires_strength = _hires(checkpoint, data, mode, steps, (width, height), errors)
    if errors:
        raise InvalidParams(errors)
    return JobParams(
        mode=mode,
        prompt=prompt,
        negative_prompt=data.negative_prompt.strip(),
        strength=strength,
        steps=steps,
        guidance_scale=checkpoint.default_guidance if data.guidance_scale is None else data.guidance_scale,
        scheduler=scheduler,
        hires_scale=hires_scale,
        hires_strength=hires_strength,
        loras=tuple(LoraWeight(slug=lora.slug, weight=weight) for lora, weight in loras),
        seed=secrets.randbelow(MAX_SEED + 1) if data.seed is None else data.seed,
        num_images=data.num_images,
        width=width,
        height=height,
        mask_blur=getattr(data, "mask_blur", 0) if mode == Mode.INPAINT else 0,
        **control_settings,
    )


_LORA_ITEM = re.compile(r"^\s*([-a-zA-Z0-9_]+)\s*(?::\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*)?$")


def parse_loras(text: str | None) -> list[tuple[str, float | None]]:
    """`slug:weight,slug,...` as (slug, weight or None for its default);
    InvalidParams naming `loras` for a malformed list, more than MAX_LORAS,
    a slug given twice or a weight out of range."""
    from catalog.models import LORA_WEIGHT_MAX, LORA_WEIGHT_MIN, MAX_LORAS

    if not text or not text.strip():
        return []
    parsed: list[tuple[str, float | None]] = []
    for item in text.split(","):
        match = _LORA_ITEM.match(item)
        if match is None:
            raise InvalidParams({"loras": f"{item.strip()!r} is not slug or slug:weight. {FIELD_HELP['loras']}"})
        slug, weight = match.group(1), match.group(2)
        value = float(weight) if weight is not None else None
        if value is not None and not (LORA_WEIGHT_MIN <= value <= LORA_WEIGHT_MAX and math.isfinite(value)):
            raise InvalidParams({"loras": f"{slug}: the weight must be from -2 to 2."})
        if any(slug == seen for seen, _ in parsed):
            raise InvalidParams({"loras": f"{slug} is given twice."})
        parsed.append((slug, value))
    if len(parsed) > MAX_LORAS:
        raise InvalidParams({"loras": f"At most {MAX_LORAS} LoRAs a job."})
    return parsed


def _hires(checkpoint, data, mode: Mode, steps: int, size: tuple[int, int], errors: dict[str, str]):
    """The hires pass's (scale, strength): (1.0, 0.0) without one; an error
    for a mode that does not take it, a strength without a scale, a pass
    with no denoising step, or pictures past the model's max side."""
    scale = 1.0 if data.hires_scale is None else data.hires_scale
    if scale <= 1:
        if data.hires_strength is not None:
            errors["hires_strength"] = "A hires strength needs hires_scale above 1."
        return 1.0, 0.0
    strength = HIRES_STRENGTH if data.hires_strength is None else data.hires_strength
    if not MODE_RULES[mode].hires:
        errors["hires_scale"] = "The hires pass is for text to image and image to image."
    elif denoising_steps(steps, strength) < 1:
        errors["hires_strength"] = "Steps x hires strength must be at least 1; raise one of them."
    elif size[0] and max(hires_size(*size, scale)) > checkpoint.max_side:
        width, height = hires_size(*size, scale)
        errors["hires_scale"] = (
            f"The pictures would be {width}x{height}; this model makes at most {checkpoint.max_side} pixels a side."
        )
    return scale, strength


def _control_settings(data, control, errors: dict[str, str]) -> dict:
    """A ControlNet job's settings: its network's slug, the preprocess (by
    default the network's kind) and the guidance's scale and span. A quote
    has no preprocess or scale (they do not change the price): the defaults."""
    if control is None:
        return {}
    start = getattr(data, "control_start", 0.0)
    end = getattr(data, "control_end", 1.0)
    if start >= end:
        errors["control_end"] = "Must be above control_start (both are fractions of the steps, 0-1)."
    return {
        "control": control.slug,
        "preprocess": getattr(data, "preprocess", None) or control.kind,
        "conditioning_scale": getattr(data, "conditioning_scale", 1.0),
        "control_start": start,
        "control_end": end,
    }


def _canvas(checkpoint, data: _OutpaintIn, image_size: tuple[int, int]) -> tuple[tuple[int, int], dict[str, str]]:
    """Outpainting's canvas: the picture with expand_* added; an error on
    each side that grew past the model's max side."""
    width = image_size[0] + data.expand_left + data.expand_right
    height = image_size[1] + data.expand_top + data.expand_bottom
    message = f"The new canvas ({width}x{height}) must fit within {checkpoint.max_side} pixels a side for this model."
    errors = {}
    if width > checkpoint.max_side:
        errors.update({name: message for name in ("expand_left", "expand_right") if getattr(data, name)})
    if height > checkpoint.max_side:
        errors.update({name: message for name in ("expand_top", "expand_bottom") if getattr(data, name)})
    return (width, height), errors


def txt2img_size(checkpoint) -> tuple[int, int]:
    """Text to image's default output size: the first allowed size, else the
    family's native side, square, within the model's max side."""
    return _output_size(checkpoint, None, None, None, FAMILIES[checkpoint.family].native_side)[:2]


def size_presets(checkpoint) -> list[tuple[str, int, int]]:
    """The create page's text to image sizes, (label, width, height): the
    allowed sizes, else the default square and its 4:3, 3:4 and 16:9 crops
    (multiples of 8)."""
    if checkpoint.allowed_sizes:
        return [(f"{w}x{h}", w, h) for w, h in checkpoint.allowed_sizes]
    side = txt2img_size(checkpoint)[0]

    def part(ratio: float) -> int:
        return max(MIN_SIDE, int(side * ratio) // SIZE_MULTIPLE * SIZE_MULTIPLE)

    return [
        ("Square", side, side),
        ("Landscape 4:3", side, part(3 / 4)),
        ("Portrait 3:4", part(3 / 4), side),
        ("Wide 16:9", side, part(9 / 16)),
    ]


def mode_refusal(checkpoint, mode: Mode) -> str:
    offered = ", ".join(Mode(m).label.lower() for m in checkpoint.modes)
    return f"{checkpoint.name} cannot do {mode.label.lower()}; it offers {offered}. Choose another model."


def _output_size(checkpoint, width, height, image_size, default_side: int) -> tuple[int, int, str | None]:
    """Without a size: the allowed size that comes first, else the input's
    fitted to the model, else `default_side` square (within max_side)."""
    allowed = [tuple(pair) for pair in checkpoint.allowed_sizes or []]
    if width is None and height is None:
        if image_size is None:
            side = min(checkpoint.max_side, default_side)
            return (allowed[0] if allowed else (side, side)) + (None,)
        return (*_fit(image_size, checkpoint.max_side, allowed), None)
    if width is None or height is None:
        return 0, 0, "Give both width and height, or neither."
    if allowed and (width, height) not in allowed:
        return 0, 0, "This model offers " + ", ".join(f"{w}x{h}" for w, h in allowed) + "."
    if max(width, height) > checkpoint.max_side:
        return 0, 0, f"Each side between {MIN_SIDE} and {checkpoint.max_side} pixels for this model."
    return width, height, None


def _fit(image_size: tuple[int, int], max_side: int, allowed: list[tuple[int, int]]) -> tuple[int, int]:
    """The input's aspect ratio within max_side, in multiples of 8 (or the
    allowed size closest in aspect)."""
    w, h = image_size
    if allowed:
        return min(allowed, key=lambda size: abs(size[0] / size[1] - w / h))
    scale = min(1.0, max_side / max(w, h))
    step = SIZE_MULTIPLE
    return (max(MIN_SIDE, int(w * scale) // step * step), max(MIN_SIDE, int(h * scale) // step * step))
