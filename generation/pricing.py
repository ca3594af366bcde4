"""The one pricing function: the quote shown before submitting, the hold and
the charge all come from quote()."""

from __future__ import annotations

import math

from catalog.samplers import SAMPLERS
from generation.params import JobParams, denoising_steps

MEGAPIXEL = 1024 * 1024


def quote(*, checkpoint, params: JobParams, control=None, loras=()) -> int:
    """Credits for a job.

    price_per_image covers one image of up to one megapixel at the
    checkpoint's default steps and strength. Larger images cost per started
    megapixel; the cost scales with the denoising steps that actually run
    (steps x strength) against the default's: text to image runs them all.
    A ControlNet job's `control` runs its network beside the UNet at every
    step it guides: its cost_factor (measured: bench/controlnet_cost.py)
    applies to that span of the steps. A hires pass adds its own denoising
    steps at its larger size (both passes are priced). A second-order
    sampler's steps count twice (two model calls each). Each of `loras`
    (the job's (Lora, weight) pairs) adds its price_per_image to every
    image. Every image costs at least 1.
    """
    size_units = math.ceil(params.width * params.height / MEGAPIXEL)
    reference = max(1, denoising_steps(checkpoint.default_steps, checkpoint.default_strength))
    step_ratio = max(1, params.denoising_steps) / reference
    if control is not None:
        guided = max(0.0, params.control_end - params.control_start)
        step_ratio *= 1 + (control.cost_factor - 1) * guided
    # A second-order sampler runs the model twice a step (catalog.samplers).
    calls = SAMPLERS[params.scheduler].calls_per_step if params.scheduler in SAMPLERS else 1
    step_ratio *= calls
    work = size_units * step_ratio
    if params.has_hires:
        # The hires pass: its denoising steps at the larger size.
        width, height = params.output_size
        work += math.ceil(width * height / MEGAPIXEL) * params.hires_steps * calls / reference
    per_image = max(1, math.ceil(checkpoint.price_per_image * work - 1e-9))
    per_image += sum(lora.price_per_image for lora, _ in loras)
    return per_image * params.num_images
