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


def image_clean(upload, *, field: str = "image", background=(255, 255, 255)) -> CleanImage:
    """Validate an uploaded file and return it re-encoded as PNG (EXIF
    orientation applied, metadata dropped, alpha flattened on `background`:
    white, or black for a ControlNet map, whose background is black).
    Errors name `field`."""
    return _png(_flatten(_decoded(upload, field=field), background))


def mask_clean(upload, *, size: tuple[int, int]) -> CleanImage:
    """Inpainting's mask, checked like a picture and returned as a black and
    white PNG: white (a pixel of at least half brightness) = change; a
    transparent pixel counts as black. It must be `size` (the picture's)
    and must mark something."""
    image = _decoded(upload, field="mask")
    if image.size != size:
        raise InvalidImage(
            f"The mask is {image.width}x{image.height}; it must be the picture's size, {size[0]}x{size[1]}.",
            fields={"mask": f"must be {size[0]}x{size[1]}, the picture's size"},
        )
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        gray = Image.new("L", rgba.size, 0)
        gray.paste(rgba.convert("L"), mask=rgba.getchannel("A"))
    else:
        gray = image.convert("L")
    mask = gray.point(lambda value: 255 if value >= 128 else 0)
    if mask.getbbox() is None:
        raise InvalidImage(
            "The mask is all black: paint in white what should change.", fields={"mask": "empty (all black)"}
        )
    return _png(mask)


def outpaint_canvas(
    source: CleanImage, *, left: int, right: int, top: int, bottom: int
) -> tuple[CleanImage, CleanImage]:
    """Outpainting: the picture placed on a canvas grown by the given pixels
    on each side, and its mask (white = the new area). The new area starts
    mid-gray, which the pipeline repaints (at strength 1, from noise alone)."""
    with Image.open(io.BytesIO(source.png)) as opened:
        picture = opened.convert("RGB")
    width, height = source.width + left + right, source.height + top + bottom
    canvas = Image.new("RGB", (width, height), (127, 127, 127))
    canvas.paste(picture, (left, top))
    mask = Image.new("L", (width, height), 255)
    mask.paste(0, (left, top, left + source.width, top + source.height))
    return _png(canvas), _png(mask)


def _png(image: Image.Image) -> CleanImage:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return CleanImage(png=out.getvalue(), width=image.width, height=image.height)


def _decoded(upload, *, field: str) -> Image.Image:
    """The upload, bounded, sniffed and decoded (EXIF orientation applied)."""
    if upload is None:
        raise InvalidImage("Upload a picture (PNG, JPEG or WebP).", fields={field: "required"})
    limit = settings.UPLOAD_MAX_BYTES
    if (upload.size or 0) > limit:
        raise UploadTooLarge(f"The file is larger than {limit // (1024 * 1024)} MB.", fields={field: "too large"})
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLarge(f"The file is larger than {limit // (1024 * 1024)} MB.", fields={field: "too large"})
    try:
        image = _open(data)
        width, height = image.size  # from the header: nothing is decoded yet
        _check_size(width, height, field)
        image.verify()  # structure check; the image must be reopened after it
        image = _open(data)
        image.load()  # a truncated or corrupt file fails here
        return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError:  # Pillow's own process-wide ceiling, if lower than ours
        raise _too_many_pixels(field) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise InvalidImage(
            "That file is not a PNG, JPEG or WebP picture we can read.",
            fields={field: "not a readable PNG, JPEG or WebP image"},
        ) from None


def _check_size(width: int, height: int, field: str) -> None:
    """Our own pixel limit, compared here rather than through Pillow's
    MAX_IMAGE_PIXELS and DecompressionBombWarning: those are process-wide
    (a global and the warnings filters), not safe to set per request in a
    threaded server, and a warning filtered elsewhere would let a bomb through."""
    if width * height > settings.UPLOAD_MAX_PIXELS:
        raise _too_many_pixels(field)
    if min(width, height) < MIN_SIDE:
        raise InvalidImage(f"The picture is smaller than {MIN_SIDE} pixels on a side.", fields={field: "too small"})


def _too_many_pixels(field: str) -> InvalidImage:
    return InvalidImage(
        f"The picture has more than {settings.UPLOAD_MAX_PIXELS:,} pixels.", fields={field: "too many pixels"}
    )


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data), formats=FORMATS)


def control_picture(upload, *, largest: int | None) -> Image.Image:
    """A control picture for a preview: checked like any upload, decoded
    once, flattened on black and, given `largest`, made to fit within that
    many pixels a side (what a job's output can be), so the preview's work
    is bounded."""
    image = _flatten(_decoded(upload, field="control_image"), (0, 0, 0))
    if largest is not None:
        image.thumbnail((largest, largest), Image.Resampling.LANCZOS)
    return image


def _flatten(image: Image.Image, color=(255, 255, 255)) -> Image.Image:
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, color)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
