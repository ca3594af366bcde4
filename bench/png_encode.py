"""Benchmark: the PNG encoder results and re-encoded uploads go through
(generation.images.png_encode) against Pillow's own, in one run. Prints the
best of REPEATS of each, in ms, and the file size, for three 512 px
pictures: noise over a gradient (bench/job_path.py's input; what the
random-weight test checkpoints make looks like it), a blurred noise picture
(closer to a photograph) and a smooth gradient (a flat illustration).

    .venv/bin/python bench/png_encode.py
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageFilter  # noqa: E402

from generation.images import png_encode  # noqa: E402

SIDE = 512
REPEATS = int(os.environ.get("REPEATS", "10"))


def pictures() -> dict[str, Image.Image]:
    gradient = Image.linear_gradient("L").resize((SIDE, SIDE))
    noisy = Image.merge("RGB", [Image.blend(gradient, Image.effect_noise((SIDE, SIDE), 24), 0.5) for _ in range(3)])
    photo = Image.merge(
        "RGB", [Image.effect_noise((SIDE, SIDE), 64).filter(ImageFilter.GaussianBlur(3)) for _ in range(3)]
    )
    smooth = Image.merge("RGB", [gradient, gradient.rotate(90), gradient.rotate(45)])
    return {"noise over a gradient": noisy, "blurred noise (photo-like)": photo, "smooth gradient": smooth}


def pillow(**options):
    def encode(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.save(out, format="PNG", **options)
        return out.getvalue()

    return encode


ENCODERS = {
    "Pillow, default (level 6)": pillow(),
    "Pillow, level 1 (the old results setting)": pillow(compress_level=1),
    "png_encode (Up filter, level 1, RLE)": png_encode,
}


def best_ms(encode, image) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        size = len(encode(image))
        best = min(best, time.perf_counter() - started)
    return 1000 * best, size


def main() -> int:
    print(f"PNG encode, {SIDE} px RGB, best of {REPEATS}, one thread, on {os.cpu_count()} cores")
    for name, image in pictures().items():
        print(f"  {name}:")
        baseline = None
        for label, encode in ENCODERS.items():
            ms, size = best_ms(encode, image)
            baseline = baseline or ms
            print(f"    {label:<45} {ms:7.1f} ms  {size / 1000:7.0f} kB  ({ms / baseline:.2f}x the default's time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
