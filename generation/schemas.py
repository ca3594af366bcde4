"""What the JSON API, the websocket and the pages' scripts see: one schema
per answer, documented in the OpenAPI schema at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from django.urls import reverse
from ninja import Schema
from pydantic import Field

from catalog.controls import Preprocess
from generation.models import Job
from generation.params import JobParams, hires_size, txt2img_size
from generation.selectors import queue_position


class ErrorBody(Schema):
    code: str = Field(
        description="Stable, machine-readable: invalid_params, moderated (a prompt the content rules refuse), "
        "insufficient_credits, not_found, ..."
    )
    message: str = Field(description="For people: what went wrong and what to do")
    fields: dict[str, str] | None = Field(None, description="Per field, what it accepts (bad input only)")


class ErrorOut(Schema):
    error: ErrorBody


class AccountOut(Schema):
    email: str
    credits: int = Field(ge=0)


class Defaults(Schema):
    strength: float = Field(description="Image to image's; text to image runs every step")
    steps: int
    guidance_scale: float


class Limits(Schema):
    max_side: int
    max_steps: int
    allowed_sizes: list[list[int]] = Field(description="[[width, height], ...]; empty: any multiple of 8")


class ControlNetOut(Schema):
    slug: str
    name: str
    kind: Literal[tuple(p.value for p in Preprocess if p != Preprocess.NONE)] = Field(
        description="The map it is conditioned on; a job's default preprocess"
    )
    cost_factor: float = Field(description="Its jobs cost this many times the model's price (over the steps it guides)")
    is_test: bool = Field(description="Random weights built for tests")
    available: bool = Field(description="A live worker has its weights now")


class LoraOut(Schema):
    slug: str
    name: str
    trigger_words: str = Field(description="Words it was trained on: add them to the prompt")
    default_weight: float = Field(description="Its weight when `loras` names it without one")
    price_per_image: int = Field(description="Credits it adds to each image")
    is_test: bool = Field(description="Random weights built for tests")
    available: bool = Field(description="A live worker serving this model has its file now")


class ModelOut(Schema):
    slug: str
    name: str
    family: str
    tags: list[str]
    modes: list[Literal["img2img", "txt2img", "inpaint", "controlnet"]] = Field(
        description="What it can make pictures from: img2img (POST /api/v1/img2img), txt2img (POST /api/v1/txt2img), "
        "inpaint (POST /api/v1/inpaint: inpainting and outpainting), controlnet (POST /api/v1/controlnet, with one "
        "of `controlnets`)"
    )
    controlnets: list[ControlNetOut] = Field(description="The enabled ControlNets that fit it")
    loras: list[LoraOut] = Field(description="The enabled LoRAs that fit it (`loras` of a submit)")
    schedulers: list[str] = Field(description="The samplers its jobs may name (`scheduler`), its default first")
    default_scheduler: str = Field(description="The sampler a job runs with when it names none")
    native_size: list[int] = Field(
        description="[width, height]: text to image's default size, the model's native size within its limits"
    )
    cost_per_image: int = Field(description="Credits for one image at the defaults, up to one megapixel")
    defaults: Defaults
    limits: Limits
    is_test: bool = Field(description="Random weights built for tests: the output is noise")
    available: bool = Field(description="A live worker serves it now")

    @staticmethod
    def resolve_tags(checkpoint) -> list[str]:
        return [tag.slug for tag in checkpoint.tags.all()]

    @staticmethod
    def resolve_cost_per_image(checkpoint) -> int:
        return checkpoint.price_per_image

    @staticmethod
    def resolve_modes(checkpoint) -> list[str]:
        return [mode.value for mode in checkpoint.modes]

    @staticmethod
    def resolve_schedulers(checkpoint) -> list[str]:
        default = checkpoint.scheduler_default
        return [default, *(name for name in checkpoint.schedulers if name != default)]

    @staticmethod
    def resolve_default_scheduler(checkpoint) -> str:
        return checkpoint.scheduler_default

    @staticmethod
    def resolve_native_size(checkpoint) -> list[int]:
        return list(txt2img_size(checkpoint))

    @staticmethod
    def resolve_defaults(checkpoint) -> dict:
        return {
            "strength": checkpoint.default_strength,
            "steps": checkpoint.default_steps,
            "guidance_scale": checkpoint.default_guidance,
        }

    @staticmethod
    def resolve_limits(checkpoint) -> dict:
        return {
            "max_side": checkpoint.max_side,
            "max_steps": checkpoint.max_steps,
            "allowed_sizes": checkpoint.allowed_sizes,
        }


class ModelsOut(Schema):
    models: list[ModelOut]


class QuoteOut(Schema):
    credits: int = Field(ge=1, description="What a submit with these fields would hold")


class Progress(Schema):
    step: int = Field(ge=0)
    total: int = Field(ge=0)


class ImageOut(Schema):
    url: str = Field(description="The PNG, served to its owner only")


class WebhookOut(Schema):
    url: str
    status: Literal["pending", "delivered", "failed"] = Field(
        description="pending until a receiver answers 2xx (also while the job runs); failed when every "
        "retry failed or the address was refused"
    )
    attempts: int = Field(ge=0, description="Requests made so far")


class WebhookSecretOut(Schema):
    key: str = Field(description="Standard Webhooks signing secret, whsec_ and base64")


class HiresOut(Schema):
    scale: float
    strength: float
    width: int = Field(description="The pictures' size: the first pass's times scale")
    height: int


class JobOut(JobParams):
    """A job: its settings (JobParams), where it is, what it made and cost."""

    id: UUID
    status: Job.Status
    model: str = Field(description="Checkpoint slug")
    progress: Progress
    queue_position: int | None = Field(description="1 = next; null unless queued")
    images: list[ImageOut]
    error: str | None
    error_code: str | None = Field(
        description="Why it failed or was canceled, e.g. moderated (a picture it made was flagged by the "
        "content check and not kept; nothing charged), worker_lost, time_limit, canceled"
    )
    credits_held: int
    credits_charged: int | None = Field(description="Null until it succeeds")
    parent_job: UUID | None
    # ISO 8601 as Python writes it (microseconds, +00:00), the same on the
    # API and the websocket.
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    finished_at: str | None = Field(json_schema_extra={"format": "date-time"})
    webhook: WebhookOut | None = Field(description="Null without a webhook_url")
    mask_url: str | None = Field(
        description="inpaint: its mask (PNG, white = changed; an outpainting's new area), served to its owner "
        "only; null for the other modes and after retention"
    )
    control_image_url: str | None = Field(
        description="controlnet: its control picture (PNG, as sent: the map is made from it by `preprocess`), "
        "served to its owner only; null for the other modes and after retention"
    )
    hires: HiresOut | None = Field(description="The hires pass, null without one")
    expires_at: str | None = Field(
        json_schema_extra={"format": "date-time"},
        description="When its input and pictures are (or were) deleted, RESULT_RETENTION_DAYS after it ended; "
        "null while it runs or when results are kept forever. After it, images is empty; the job stays.",
    )

    @staticmethod
    def resolve_hires(job: Job) -> dict | None:
        if job.hires_scale <= 1:
            return None
        width, height = hires_size(job.width, job.height, job.hires_scale)
        return {"scale": job.hires_scale, "strength": job.hires_strength, "width": width, "height": height}

    @staticmethod
    def resolve_model(job: Job) -> str:
        return job.checkpoint.slug

    @staticmethod
    def resolve_progress(job: Job) -> dict:
        return {"step": job.progress_step, "total": job.progress_total}

    @staticmethod
    def resolve_queue_position(job: Job) -> int | None:
        return queue_position(job)

    @staticmethod
    def resolve_images(job: Job) -> list[dict]:
        # Only a succeeded job has pictures: the others' answer needs no query.
        if job.status != Job.Status.SUCCEEDED:
            return []
        return [{"url": reverse("api:image", args=[image.id])} for image in job.images.all()]

    @staticmethod
    def resolve_mask_url(job: Job) -> str | None:
        return reverse("api:job-mask", args=[job.id]) if job.mask else None

    @staticmethod
    def resolve_control_image_url(job: Job) -> str | None:
        return reverse("api:job-control", args=[job.id]) if job.control_image else None

    @staticmethod
    def resolve_error(job: Job) -> str | None:
        return job.error or None

    @staticmethod
    def resolve_error_code(job: Job) -> str | None:
        return job.error_code or None

    @staticmethod
    def resolve_parent_job(job: Job) -> UUID | None:
        return job.parent_id

    @staticmethod
    def resolve_created_at(job: Job) -> str:
        return job.created_at.isoformat()

    @staticmethod
    def resolve_finished_at(job: Job) -> str | None:
        return job.finished_at.isoformat() if job.finished_at else None

    @staticmethod
    def resolve_expires_at(job: Job) -> str | None:
        expires = job.results_expire_at
        return expires.isoformat() if expires else None

    @staticmethod
    def resolve_webhook(job: Job) -> dict | None:
        if not job.webhook_url:
            return None
        # No delivery row until the job ends (a missing reverse one-to-one
        # raises an AttributeError).
        delivery = getattr(job, "webhook_delivery", None)
        if delivery is None:
            return {"url": job.webhook_url, "status": "pending", "attempts": 0}
        return {"url": delivery.url, "status": delivery.status, "attempts": delivery.attempts}


class JobsOut(Schema):
    jobs: list[JobOut]
    page: int
    pages: int


def job_out(job: Job) -> dict:
    """A job as JSON-ready data (the websocket sends this)."""
    return JobOut.from_orm(job).model_dump(mode="json")
