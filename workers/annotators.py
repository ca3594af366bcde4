"""ControlNet's annotators with learned weights: they turn a control picture
into a map that no formula makes (catalog.controls makes the others).

Each is a folder under ANNOTATORS_DIR named after its preprocess; a worker
offers (in its heartbeat) those whose folder it has and that this module
runs. Depth runs any transformers depth-estimation model (DPT, Depth
Anything). Pose and line art need their own networks (controlnet_aux), which
this service does not ship: they are refused at submit, and a ready map can
be sent with preprocess=none instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)

# The preprocesses this module runs, and the file that marks a folder as
# holding its weights.
RUNS = {"depth": "config.json"}


def annotator_folder(name: str) -> Path:
    return Path(settings.ANNOTATORS_DIR) / name


def annotators_here() -> list[str]:
    """The weighted preprocesses this worker can run: weights present and
    code to run them."""
    return [name for name, marker in RUNS.items() if (annotator_folder(name) / marker).exists()]


def annotate(name: str, picture, *, cache):
    """The map (RGB, the picture's size) of annotator `name`, its model held
    in the worker's pipeline cache (`cache`: its budget counts it)."""
    if name not in RUNS:
        raise ValueError(f"no annotator {name!r} here")
    folder = str(annotator_folder(name))
    estimate = cache.network(("annotator", name, folder), lambda: _depth_estimator(folder, cache.device))
    depth = estimate(picture.convert("RGB"))["depth"]
    return depth.convert("RGB").resize(picture.size)


def _depth_estimator(folder: str, device: str):
    """transformers' depth-estimation pipeline over a local model."""
    from transformers import pipeline

    log.info("loading the depth annotator from %s", folder)
    return pipeline("depth-estimation", model=folder, device=device)
