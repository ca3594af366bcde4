"""The parameters of an img2img request: one schema for the API and the
pages, and the checkpoint's limits applied in one place."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from ninja import Schema
from pydantic import Field

from generation.errors import InvalidParams
from generation.models import Checkpoint
from generation.pricing import denoising_steps

MAX_SEED = 2**32 - 1
MIN_SIDE = 64


class Img2ImgIn(Schema):
    """Form fields of POST /api/v1/img2img and /api/v1/quote (types only;
    limits depend on the model and are checked by job_params)."""

    model: str = Field(description="Checkpoint slug, see GET /api/v1/models")
    prompt: str = Field("", description="What the picture should become")
    negative_prompt: str = ""
    strength: float | None = Field(None, description="0-1; default: the model's")
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = Field(None, description="Same seed, settings and model: the same picture")
    num_images: int = 1
    width: int | None = Field(None, description="Output width; default: the input's, fitted to the model")
    height: int | None = None
    parent_job: UUID | None = Field(None, description="Iterate on this job (its first result is the input)")


@dataclass(frozen=True)
class JobParams:
    prompt: str
    negative_prompt: str
    strength: float
    steps: int
    guidance_scale: float
    seed: int
    num_images: int
    width: int
    height: int


def job_params(
    *, checkpoint: Checkpoint, data: Img2ImgIn, image_size: tuple[int, int] | None, require_prompt: bool = True
) -> JobParams:
    """Apply the model's defaults and limits; raise InvalidParams listing
    every field that is wrong."""
    errors: dict[str, str] = {}
    limit = settings.PROMPT_MAX_CHARS
    prompt = data.prompt.strip()
    if require_prompt and not prompt:
        errors["prompt"] = "Describe what the picture should become."
    if len(prompt) > limit:
        errors["prompt"] = f"At most {limit} characters."
    if len(data.negative_prompt) > limit:
        errors["negative_prompt"] = f"At most {limit} characters."

    strength = checkpoint.default_strength if data.strength is None else data.strength
    if not 0 < strength <= 1:
        errors["strength"] = "Between 0 (exclusive) and 1."
    steps = checkpoint.default_steps if data.steps is None else data.steps
    if not 1 <= steps <= checkpoint.max_steps:
        errors["steps"] = f"Between 1 and {checkpoint.max_steps} for this model."
    guidance = checkpoint.default_guidance if data.guidance_scale is None else data.guidance_scale
    if not 0 <= guidance <= 30:
        errors["guidance_scale"] = "Between 0 and 30."
    seed = secrets.randbelow(MAX_SEED + 1) if data.seed is None else data.seed
    if not 0 <= seed <= MAX_SEED:
        errors["seed"] = f"Between 0 and {MAX_SEED}."
    if not 1 <= data.num_images <= 4:
        errors["num_images"] = "Between 1 and 4."
    if "strength" not in errors and "steps" not in errors and denoising_steps(steps, strength) < 1:
        errors["strength"] = "Steps x strength must be at least 1; raise one of them."

    width, height, size_error = _output_size(checkpoint, data.width, data.height, image_size)
    if size_error:
        errors["width"] = size_error
    if errors:
        raise InvalidParams(errors)
    return JobParams(
        prompt=prompt,
        negative_prompt=data.negative_prompt.strip(),
        strength=strength,
        steps=steps,
        guidance_scale=guidance,
        seed=seed,
        num_images=data.num_images,
        width=width,
        height=height,
    )


def _output_size(checkpoint, width, height, image_size) -> tuple[int, int, str | None]:
    allowed = [tuple(pair) for pair in checkpoint.allowed_sizes or []]
    if width is None and height is None:
        if image_size is None:
            side = min(checkpoint.max_side, 512)
            return (allowed[0] if allowed else (side, side)) + (None,)
        return (*_fit(image_size, checkpoint.max_side, allowed), None)
    if width is None or height is None:
        return 0, 0, "Give both width and height, or neither."
    if allowed and (width, height) not in allowed:
        return 0, 0, "This model offers " + ", ".join(f"{w}x{h}" for w, h in allowed) + "."
    if width % 8 or height % 8:
        return 0, 0, "Width and height must be multiples of 8."
    if not (MIN_SIDE <= width <= checkpoint.max_side and MIN_SIDE <= height <= checkpoint.max_side):
        return 0, 0, f"Each side between {MIN_SIDE} and {checkpoint.max_side} pixels for this model."
    return width, height, None


def _fit(image_size: tuple[int, int], max_side: int, allowed: list[tuple[int, int]]) -> tuple[int, int]:
    """The input's aspect ratio within max_side, in multiples of 8 (or the
    allowed size closest in aspect)."""
    w, h = image_size
    if allowed:
        return min(allowed, key=lambda size: abs(size[0] / size[1] - w / h))
    scale = min(1.0, max_side / max(w, h))
    return (max(MIN_SIDE, int(w * scale) // 8 * 8), max(MIN_SIDE, int(h * scale) // 8 * 8))
