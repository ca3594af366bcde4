"""Upload validation: what comes in is sniffed, bounded and re-encoded before
it is stored, so nothing of the original file (metadata, trailing bytes, a
disguised format) survives."""

from __future__ import annotations

import io
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

from generation.errors import InvalidImage, UploadTooLarge

FORMATS = ["PNG", "JPEG", "WEBP"]
MIN_SIDE = 16


@dataclass(frozen=True)
class CleanImage:
    png: bytes
    width: int
    height: int


def image_clean(upload) -> CleanImage:
    """Validate an uploaded file and return it re-encoded as PNG (EXIF
    orientation applied, metadata dropped, alpha flattened on white)."""
    if upload is None:
        raise InvalidImage("Upload a picture (PNG, JPEG or WebP).", fields={"image": "required"})
    limit = settings.UPLOAD_MAX_BYTES
    if (upload.size or 0) > limit:
        raise UploadTooLarge(f"The file is larger than {limit // (1024 * 1024)} MB.", fields={"image": "too large"})
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLarge(f"The file is larger than {limit // (1024 * 1024)} MB.", fields={"image": "too large"})
    try:
        image = _open(data)
        width, height = image.size  # from the header: nothing is decoded yet
        _check_size(width, height)
        image.verify()  # structure check; the image must be reopened after it
        image = _open(data)
        image.load()  # a truncated or corrupt file fails here
        image = ImageOps.exif_transpose(image)
        image = _flatten(image)
    except Image.DecompressionBombError:  # Pillow's own process-wide ceiling, if lower than ours
        raise _too_many_pixels() from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise InvalidImage(
            "That file is not a PNG, JPEG or WebP picture we can read.",
            fields={"image": "not a readable PNG, JPEG or WebP image"},
        ) from None
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return CleanImage(png=out.getvalue(), width=image.width, height=image.height)


def _check_size(width: int, height: int) -> None:
    """Our own pixel limit, compared here rather than through Pillow's
    MAX_IMAGE_PIXELS and DecompressionBombWarning: those are process-wide
    (a global and the warnings filters), not safe to set per request in a
    threaded server, and a warning filtered elsewhere would let a bomb through."""
    if width * height > settings.UPLOAD_MAX_PIXELS:
        raise _too_many_pixels()
    if min(width, height) < MIN_SIDE:
        raise InvalidImage(f"The picture is smaller than {MIN_SIDE} pixels on a side.", fields={"image": "too small"})


def _too_many_pixels() -> InvalidImage:
    return InvalidImage(
        f"The picture has more than {settings.UPLOAD_MAX_PIXELS:,} pixels.", fields={"image": "too many pixels"}
    )


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data), formats=FORMATS)


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
