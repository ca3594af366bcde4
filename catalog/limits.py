"""Hard limits of every job, whatever the model. A checkpoint's own limits
(max side, max steps, allowed sizes) sit inside these; the API schema
publishes them as constraints."""

from __future__ import annotations

MIN_SIDE = 64
MAX_SIDE = 2048
MAX_STEPS = 150
MAX_IMAGES = 4
MAX_GUIDANCE = 30.0
MAX_SEED = 2**32 - 1
SIZE_MULTIPLE = 8
