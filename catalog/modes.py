"""What a job makes its pictures from: the modes of generation.

A job's mode decides its inputs and which pipeline a worker runs
(workers.runtime). A checkpoint lists the modes it can run
(Checkpoint.modes); the catalog, the API and the pages offer only those.
"""

from __future__ import annotations

from django.db import models


class Mode(models.TextChoices):
    IMG2IMG = "img2img", "Image to image"
    TXT2IMG = "txt2img", "Text to image"
    # Inpainting and outpainting: a mask says what changes (outpainting's
    # mask is the new area of a larger canvas).
    INPAINT = "inpaint", "Inpainting"
    # ControlNet: a control picture keeps the structure (with an input
    # picture too, its image to image variant).
    CONTROLNET = "controlnet", "ControlNet"


# The modes the create page offers: all of them.
OFFERED = (Mode.IMG2IMG, Mode.TXT2IMG, Mode.INPAINT, Mode.CONTROLNET)
