"""Upload validation: what comes in is sniffed, bounded and decoded once; a
PNG that carries nothing but its pixels is kept byte for byte, anything else
is re-encoded before it is stored, so nothing of the original file
(metadata, trailing bytes, a disguised format) survives. And the one PNG
encoder the portal writes with (png_encode), for uploads that need it and
for results."""

from __future__ import annotations

import io
import struct
import zlib
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
    """Validate an uploaded file and return it as PNG: its own bytes when it
    is an 8-bit RGB PNG of pixels alone (_bare_png), else re-encoded (EXIF
    orientation applied, metadata dropped, alpha flattened on `background`:
    white, or black for a ControlNet map, whose background is black).
    Errors name `field`."""
    data, kind, image = _decoded_with_bytes(upload, field=field)
    if kind == "PNG" and image.mode == "RGB" and _bare_png(data):
        return CleanImage(png=data, width=image.width, height=image.height)
    return _png(_flatten(image, background))


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
    return CleanImage(png=png_encode(image), width=image.width, height=image.height)


# The chunks a kept upload may have: the picture's header, its pixels, its
# end, and sRGB (the colour space every picture is read in anyway). Any other
# (text, EXIF, ICC profile, time, transparency, gamma, private chunks) means
# the picture is re-encoded without it.
_BARE_CHUNKS = {b"IHDR", b"IDAT", b"IEND", b"sRGB"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _bare_png(data: bytes) -> bool:
    """Whether `data` is an 8-bit RGB PNG of only _BARE_CHUNKS that ends at
    its IEND chunk (nothing trailing). Reads the chunk headers only; the
    CRCs were checked by Pillow's verify and the pixels by decoding."""
    # The signature, then IHDR: length, type, width, height, bit depth 8, colour type 2 (RGB).
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR" or data[24:26] != b"\x08\x02":
        return False
    at = len(_PNG_SIGNATURE)
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        if kind not in _BARE_CHUNKS:
            return False
        at += 12 + length
        if kind == b"IEND":
            return at == len(data)
    return False


def png_encode(image: Image.Image) -> bytes:
    """`image` as a lossless PNG, fast: every row "Up"-filtered (numpy) and
    deflated at level 1 with zlib's run-length strategy. For a 512 px
    picture about 8 ms and a file the size of Pillow's level 1 or smaller,
    where Pillow's encoder takes 22-36 ms, its per-row adaptive filter being
    most of it (bench/png_encode.py). RGB and L pictures; other modes go
    through Pillow."""
    import numpy as np

    color_type = {"RGB": 2, "L": 0}.get(image.mode)
    if color_type is None:
        out = io.BytesIO()
        image.save(out, format="PNG", compress_level=1)
        return out.getvalue()
    pixels = np.asarray(image, dtype=np.uint8)
    rows = pixels.reshape(image.height, -1)
    filtered = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # filter type Up: each byte minus the one above it
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    compressed = deflate.compress(filtered.data) + deflate.flush()
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, color_type, 0, 0, 0)
    return b"".join((_PNG_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", compressed), _chunk(b"IEND", b"")))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _decoded(upload, *, field: str) -> Image.Image:
    """The upload, bounded, sniffed and decoded (EXIF orientation applied)."""
    return _decoded_with_bytes(upload, field=field)[2]


def _decoded_with_bytes(upload, *, field: str) -> tuple[bytes, str, Image.Image]:
    """The upload's bytes, bounded; their format (sniffed); and their
    picture, decoded once, EXIF orientation applied."""
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
        return data, image.format, ImageOps.exif_transpose(image)
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
