"""Pipeline families the catalog knows, and how a weight source is written.

Torch-free catalog facts: the catalog, the admin and the API validate
against these names. How a family is loaded and run (diffusers classes) is
the worker's business (workers/runtime.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    value: str
    label: str
    # Checkpoints of one architecture can share components (VAE, text encoders)
    # and a latent space (live previews).
    architecture: str
    # Guided models use classifier-free guidance; turbo models run with 0.
    turbo: bool = False
    # Some families are built and tested here with random weights.
    has_test_build: bool = False
    # The side the family was trained at: what a worker warms up.
    native_side: int = 512


FAMILIES: dict[str, Family] = {
    f.value: f
    for f in [
        Family("sd1", "Stable Diffusion 1.x", architecture="sd1", has_test_build=True),
        Family("sd2", "Stable Diffusion 2.x", architecture="sd2", has_test_build=True, native_side=768),
        Family("sd-turbo", "SD-Turbo", architecture="sd2", turbo=True, has_test_build=True),
        Family("sdxl", "SDXL", architecture="sdxl", has_test_build=True, native_side=1024),
        Family("sdxl-turbo", "SDXL-Turbo", architecture="sdxl", turbo=True, has_test_build=True),
        Family("sd3", "Stable Diffusion 3", architecture="sd3", native_side=1024),
        Family("flux", "FLUX.1", architecture="flux", native_side=1024),
    ]
}
FAMILY_CHOICES = [(f.value, f.label) for f in FAMILIES.values()]

SOURCE_KINDS = [
    ("hub", "Hugging Face repo"),
    ("folder", "Local diffusers folder"),
    ("single_file", "Single .safetensors file"),
]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_source(kind: str, source: str) -> str:
    """Return the normalised source or raise ValueError with a readable reason."""
    source = (source or "").strip()
    if not source:
        raise ValueError("A weight source is required.")
    if kind == "hub":
        if not _REPO_ID.match(source) or ".." in source:
            raise ValueError(f'"{source}" is not a Hugging Face repo id like "org/name".')
    elif kind == "folder":
        if source.endswith((".safetensors", ".ckpt", ".bin")):
            raise ValueError("A folder source must be a diffusers folder, not a weights file.")
    elif kind == "single_file":
        if not source.endswith(".safetensors"):
            raise ValueError("A single-file source must be a .safetensors file (pickled .ckpt is refused).")
    else:
        raise ValueError(f"Unknown source kind {kind!r}.")
    return source
