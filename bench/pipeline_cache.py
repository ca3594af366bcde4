"""Benchmark: what the pipeline cache saves. Prints figures, not pass/fail.

    .venv/bin/python bench/pipeline_cache.py

Baselines are measured in the same run: a fine-tune loaded alone versus
loaded next to its base (shared VAE and text encoder), and a cold load versus
a cache hit. Runs on the random-weight test checkpoints (built if missing),
so absolute times are small; the ratios are what carries over.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

from django.conf import settings  # noqa: E402
from PIL import Image  # noqa: E402

from generation.params import JobParams  # noqa: E402
from workers.cache import PipelineCache  # noqa: E402
from workers.runtime import load_pipeline, run_img2img  # noqa: E402
from workers.testweights import build_all  # noqa: E402

REPEAT = 5


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    built = {c.slug: c.spec for c in build_all(Path(settings.MODELS_DIR))}
    base, tuned = built["test-sd1"], built["test-sd1-alt"]

    alone_bytes, alone_secs, shared_bytes, shared_secs, hit_secs = [], [], [], [], []
    for _ in range(REPEAT):
        cache = PipelineCache(budget_bytes=1 << 40, loader=load_pipeline, device="cpu")
        alone_secs.append(timed(lambda cache=cache: cache.get(tuned)))
        alone_bytes.append(cache.memory_bytes())

        cache = PipelineCache(budget_bytes=1 << 40, loader=load_pipeline, device="cpu")
        cache.get(base)
        before = cache.memory_bytes()
        shared_secs.append(timed(lambda cache=cache: cache.get(tuned)))
        shared_bytes.append(cache.memory_bytes() - before)
        hit_secs.append(timed(lambda cache=cache: cache.get(tuned)))

    print("pipeline cache, test-sd1-alt (a fine-tune of test-sd1), median of", REPEAT)
    print(f"  memory added, alone:        {statistics.median(alone_bytes) / 1e6:8.2f} MB")
    print(
        f"  memory added, next to base: {statistics.median(shared_bytes) / 1e6:8.2f} MB"
        f"  ratio {statistics.median(shared_bytes) / statistics.median(alone_bytes):.2f}"
    )
    print(f"  load time, alone:           {statistics.median(alone_secs) * 1e3:8.1f} ms")
    print(
        f"  load time, next to base:    {statistics.median(shared_secs) * 1e3:8.1f} ms"
        f"  ratio {statistics.median(shared_secs) / statistics.median(alone_secs):.2f}"
    )
    print(
        f"  cache hit:                  {statistics.median(hit_secs) * 1e3:8.3f} ms"
        f"  ratio {statistics.median(hit_secs) / statistics.median(alone_secs):.5f}"
    )

    image = Image.new("RGB", (512, 512), (90, 140, 200))
    for slug in ("test-sd1", "test-sdxl"):
        pipe, _ = load_pipeline(built[slug], device="cpu")
        params = JobParams(
            prompt="a lighthouse",
            negative_prompt="",
            strength=0.5,
            steps=8,
            guidance_scale=7.0,
            seed=1,
            num_images=1,
            width=512,
            height=512,
        )
        run = lambda pipe=pipe, spec=built[slug], params=params: run_img2img(pipe, spec, image, params)  # noqa: E731
        run()  # warm-up
        secs = statistics.median(timed(run) for _ in range(3))
        print(
            f"  {slug} img2img 512 px, {params.denoising_steps} guided steps on {os.cpu_count()} CPU cores: "
            f"{secs / params.denoising_steps * 1e3:.0f} ms/step"
        )


if __name__ == "__main__":
    main()
