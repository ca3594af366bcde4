"""ControlNet's control maps: what guides a picture's structure.

A ControlNet (catalog.models.ControlNet) is conditioned on a map of one
kind: edges (canny), a scribble, depth, a pose, line art. A job sends a
control picture and says how to turn it into that map (`preprocess`):

- `none`: the picture is the map already (made elsewhere, or by hand);
- `canny`: OpenCV's Canny edges, white on black;
- `scribble`: a drawing, dark lines on light or light lines on dark, made
  white lines on black;
- `depth`, `openpose`, `lineart`: annotators with learned weights, run by a
  worker only where their weights are (workers.annotators); a worker's
  heartbeat lists those it has, and a submit asking for one no live worker
  has is refused.

The weight-free preprocessors run here, in plain OpenCV and Pillow: the
worker makes the job's map with them, and the create page's live preview
(POST /api/v1/controlnet/preview) shows the same pixels before submitting.
"""

from __future__ import annotations

from django.db import models
from PIL import Image

# Canny's hysteresis thresholds (on 0-255 gradients): OpenCV's usual pair, and
# what the reference ControlNet canny models were trained with.
CANNY_LOW = 100
CANNY_HIGH = 200


class Preprocess(models.TextChoices):
    NONE = "none", "None (the picture is the map)"
    CANNY = "canny", "Canny edges"
    SCRIBBLE = "scribble", "Scribble"
    DEPTH = "depth", "Depth (needs its annotator's weights)"
    OPENPOSE = "openpose", "Pose (needs its annotator's weights)"
    LINEART = "lineart", "Line art (needs its annotator's weights)"


# Preprocessors with learned weights: a worker runs them only where it has
# their weights (workers.annotators).
NEEDS_WEIGHTS = frozenset({Preprocess.DEPTH, Preprocess.OPENPOSE, Preprocess.LINEART})
WEIGHT_FREE = frozenset(Preprocess) - NEEDS_WEIGHTS


def control_map(picture: Image.Image, preprocess: str, *, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> Image.Image:
    """The control map (RGB, the picture's size) of a weight-free
    preprocessor. ValueError for one that needs weights (a worker's
    annotator makes those)."""
    if preprocess == Preprocess.NONE:
        return picture.convert("RGB")
    if preprocess == Preprocess.CANNY:
        return canny(picture, low=low, high=high)
    if preprocess == Preprocess.SCRIBBLE:
        return scribble(picture)
    raise ValueError(f"{preprocess!r} needs an annotator's weights: a worker makes its map")


def canny(picture: Image.Image, *, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> Image.Image:
    """White edges on black, from the picture's grey levels."""
    import cv2
    import numpy as np

    grey = np.asarray(picture.convert("L"))
    edges = cv2.Canny(grey, low, high)
    return Image.fromarray(edges).convert("RGB")


def scribble(picture: Image.Image) -> Image.Image:
    """White lines on black: a drawing on a light background (dark lines,
    the usual way people draw) is inverted first; lines are then made solid
    (at least half the way from the background)."""
    import numpy as np

    grey = np.asarray(picture.convert("L"), dtype=np.uint8)
    if grey.mean() > 127:  # mostly light: dark lines on paper
        grey = 255 - grey
    lines = np.where(grey >= 128, 255, 0).astype(np.uint8)
    return Image.fromarray(lines).convert("RGB")
