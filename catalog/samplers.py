"""Samplers: which denoising scheduler a job runs, by family.

Torch-free catalog facts (the API, the pages and the admin check against
them). A worker builds the named diffusers scheduler from the loaded
pipeline's own scheduler config (workers.runtime.use_sampler): its
timestep spacing and prediction type are the checkpoint's, no weights are
loaded again and the UNet (compiled or not) is untouched.

A job stores the sampler it ran with. Jobs made before samplers existed
store "": the checkpoint's own scheduler, as they ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampler:
    name: str  # the API's value
    label: str  # A1111's name, which people know
    scheduler: str  # the diffusers class
    options: dict = field(default_factory=dict)  # config overrides
    # Its noise is a Brownian tree seeded per row (DPMSolverSDEScheduler's
    # noise_sampler_seed), not the pipeline's generators.
    seeded_per_row: bool = False
    # Model calls per step: a second-order sampler runs the UNet twice a
    # step, and costs that much more (generation.pricing).
    calls_per_step: int = 1


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in [
        Sampler("euler", "Euler", "EulerDiscreteScheduler"),
        Sampler("euler_a", "Euler a", "EulerAncestralDiscreteScheduler"),
        Sampler("dpmpp_2m", "DPM++ 2M", "DPMSolverMultistepScheduler"),
        Sampler("dpmpp_2m_karras", "DPM++ 2M Karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
        Sampler(
            "dpmpp_sde_karras",
            "DPM++ SDE Karras",
            "DPMSolverSDEScheduler",
            {"use_karras_sigmas": True},
            seeded_per_row=True,
            calls_per_step=2,
        ),
        Sampler("ddim", "DDIM", "DDIMScheduler"),
        Sampler("unipc", "UniPC", "UniPCMultistepScheduler"),
    ]
}
# Flow-matching families (SD3, FLUX) have one sampler, Euler on their flow.
FLOW_EULER = Sampler("euler", "Euler", "FlowMatchEulerDiscreteScheduler")

_FULL = ("dpmpp_2m_karras", "dpmpp_2m", "euler_a", "euler", "dpmpp_sde_karras", "ddim", "unipc")
# Distilled models (1-4 steps, trailing timesteps from their own config):
# the ancestral Euler they were distilled with, and plain Euler.
_TURBO = ("euler_a", "euler")

# Each family's samplers, its default first.
FAMILY_SAMPLERS: dict[str, tuple[str, ...]] = {
    "sd1": _FULL,
    "sd2": _FULL,
    "sd-turbo": _TURBO,
    "sdxl": _FULL,
    "sdxl-turbo": _TURBO,
    "sd3": ("euler",),
    "flux": ("euler",),
}
FLOW_FAMILIES = ("sd3", "flux")


def sampler_names(family: str) -> tuple[str, ...]:
    return FAMILY_SAMPLERS.get(family, ())


def sampler(family: str, name: str) -> Sampler:
    """The sampler `name` of `family` (KeyError if it has none such)."""
    if name not in sampler_names(family):
        raise KeyError(name)
    return FLOW_EULER if family in FLOW_FAMILIES else SAMPLERS[name]


def sampler_label(name: str) -> str:
    return SAMPLERS[name].label if name in SAMPLERS else (name or "The model's own")
