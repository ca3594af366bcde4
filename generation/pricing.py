"""The one pricing function: the quote shown before submitting, the hold and
the charge all come from quote()."""

from __future__ import annotations

import math

from generation.params import JobParams, denoising_steps

MEGAPIXEL = 1024 * 1024


def quote(*, checkpoint, params: JobParams) -> int:
    """Credits for a job.

    price_per_image covers one image of up to one megapixel at the
    checkpoint's default steps and strength. Larger images cost per started
    megapixel; the cost scales with the denoising steps that actually run
    (steps x strength) against the default's. Every image costs at least 1.
    """
    size_units = math.ceil(params.width * params.height / MEGAPIXEL)
    reference = max(1, denoising_steps(checkpoint.default_steps, checkpoint.default_strength))
    step_ratio = max(1, params.denoising_steps) / reference
    per_image = max(1, math.ceil(checkpoint.price_per_image * size_units * step_ratio - 1e-9))
    return per_image * params.num_images
