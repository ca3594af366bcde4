"""Benchmark: what the per-job controls cost a worker's pipeline call, on the
random-weight test SD 1.x checkpoint (CPU; the real classes and loading
code), against the plain call measured in the same run:

- a sampler named by the job (built once per pipeline from the loaded
  scheduler's config, then swapped in per call: workers.runtime.use_sampler),
- LoRAs (loaded once as adapters; each call activates exactly its job's:
  workers.loras), with none active after one was loaded, one, and two,
- prompts as embeddings (weights or past 77 tokens: workers.prompts).

Prints the median of REPEATS calls of each, in ms, and its ratio to the
plain call. The test UNet is tiny, so the fixed costs (switching adapters,
encoding a prompt with compel) weigh far more here than beside a real
UNet's steps: these ratios are upper bounds.

    DEBUG=true .venv/bin/python bench/controls_overhead.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("MODELS_DIR", str(ROOT / "var" / "test" / "models"))

import django  # noqa: E402

django.setup()

from PIL import Image  # noqa: E402

from generation.params import JobParams  # noqa: E402
from workers.runtime import BatchItem, load_pipeline, run_batch  # noqa: E402
from workers.spec import LoraSpec  # noqa: E402
from workers.testweights import RANDOM_CHECKPOINTS, RANDOM_LORAS, build_all  # noqa: E402

REPEATS = int(os.environ.get("REPEATS", "9"))
SIDE = int(os.environ.get("SIDE", "128"))
SOURCE = Image.new("RGB", (SIDE, SIDE), (200, 120, 40))
LONG = "a red fox in the snow, soft light, " * 4


def params(**changes) -> JobParams:
    values = dict(
        prompt="a red fox in the snow",
        negative_prompt="",
        strength=1.0,
        steps=8,
        guidance_scale=7.0,
        seed=1,
        width=SIDE,
        height=SIDE,
        num_images=1,
        scheduler="",
    )
    values.update(changes)
    return JobParams(**values)


def median_ms(pipe, spec, job: JobParams, loras=()) -> float:
    run_batch(pipe, spec, [BatchItem(SOURCE, job)], loras=list(loras))  # warm: first builds and loads
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run_batch(pipe, spec, [BatchItem(SOURCE, job)], loras=list(loras))
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    build_all(Path(os.environ["MODELS_DIR"]))
    checkpoint = next(c for c in RANDOM_CHECKPOINTS if c.slug == "test-sd1")
    spec = checkpoint.spec
    pipe = load_pipeline(spec, device="cpu")[0]
    loras = [
        LoraSpec(slug=lora.slug, family=lora.family, source=lora.file) for lora in RANDOM_LORAS if lora.base == "sd1"
    ]
    cases = [
        ("plain (the checkpoint's own scheduler)", params(), ()),
        ("sampler euler_a", params(scheduler="euler_a"), ()),
        ("sampler dpmpp_2m_karras", params(scheduler="dpmpp_2m_karras"), ()),
        ("sampler dpmpp_sde_karras (2 model calls a step)", params(scheduler="dpmpp_sde_karras"), ()),
        ("weighted prompt (compel)", params(prompt="a (red:1.3) fox in the [snow]"), ()),
        ("long prompt, 2 chunks (compel)", params(prompt=LONG), ()),
        ("1 LoRA (kohya layout)", params(), [(loras[0], 0.8)]),
        ("2 LoRAs", params(), [(loras[0], 0.8), (loras[1], 0.5)]),
        ("no LoRA, adapters loaded and off", params(), ()),
    ]
    print(f"test-sd1, {SIDE} px, 8 steps, CPU; median of {REPEATS} calls")
    baseline = None
    for name, job, active in cases:
        ms = median_ms(pipe, spec, job, active)
        baseline = baseline or ms
        print(f"{name:50} {ms:8.1f} ms   x{ms / baseline:.2f}")


if __name__ == "__main__":
    main()
