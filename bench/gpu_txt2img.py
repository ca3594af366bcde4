"""GPU check: text to image on a compiled worker pipeline. A CUDA worker
loads the img2img pipeline, applies every speed-up (workers.accel: the UNet
compiled with CUDA graphs) and warms it up at its shapes; a text-to-image
job then runs the pipeline that diffusers' from_pipe builds from it
(workers.runtime.mode_pipeline), sharing the UNet. This checks, on full-size
random-weight SD 1.5 and SDXL pipelines, that such a job

- runs the compiled UNet at a warmed shape without compiling again (the
  compile count before and after, and the first call's time against the
  next ones), and as fast as img2img's compiled steps;
- at a shape that was not warmed, runs eagerly (compiled_if_warm) and
  compiles nothing;
- gives finite pictures, equal to the eager text pipeline's at the same seed
  within fp16's noise.

    python bench/gpu_txt2img.py            # CUDA
    python bench/gpu_txt2img.py --tiny     # anywhere (checks the script)

Needs torch, transformers and diffusers only (no Django), like
bench/gpu_speed.py, whose pipeline builder it uses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.gpu_speed import build, free, timed
from workers.accel import Speedups, compiled_if_warm, speed_up, warm_up


def compiles() -> int:
    from torch._dynamo.utils import counters

    return int(sum(counters["stats"].values())) if "stats" in counters else 0


def frames_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"].get("unique_graphs", 0))


def text_call(pipe, *, side: int, steps: int, seed: int = 0, output_type: str = "latent"):
    return pipe(
        prompt=["a lighthouse at dusk"],
        negative_prompt=["blurry"],
        num_inference_steps=steps,
        guidance_scale=7.0,
        width=side,
        height=side,
        generator=[torch.Generator("cpu").manual_seed(seed)],
        output_type=output_type,
    )


def check(family: str, *, device: str, tiny: bool, steps: int, out: dict) -> None:
    from diffusers import (
        StableDiffusionImg2ImgPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
    )

    dtype = torch.float16 if device == "cuda" else torch.float32
    side = 64 if tiny else (512 if family == "sd15" else 1024)
    img_class, text_class = {
        "sd15": (StableDiffusionImg2ImgPipeline, StableDiffusionPipeline),
        "sdxl": (StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline),
    }[family]
    base = img_class.from_pipe(build(family, device=device, dtype=dtype, tiny=tiny))
    base.set_progress_bar_config(disable=True)
    result: dict = {"side": side, "steps": steps}

    # Eager reference first (no speed-ups yet): the text pipeline's picture.
    eager_text = text_class.from_pipe(base)
    eager_text.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        reference = text_call(eager_text, side=side, steps=steps).images.float().cpu()
        result["eager_s"] = round(timed(lambda: text_call(eager_text, side=side, steps=steps), device), 3)

    applied = speed_up(base, Speedups.all() if device == "cuda" else Speedups())
    result["speedups"] = applied
    started, graphs = time.perf_counter(), frames_compiled()
    warm_up(base, width=side, height=side, batch=1, steps=2)
    result["warm_up_s"] = round(time.perf_counter() - started, 1)
    result["graphs_compiled_by_warm_up"] = frames_compiled() - graphs  # > 0 on CUDA: the counter works

    # What workers.runtime.mode_pipeline builds, and how run_batch calls it.
    text = text_class.from_pipe(base)
    text.set_progress_bar_config(disable=True)
    before = frames_compiled()
    times = []
    with torch.inference_mode():
        for _ in range(4):
            with compiled_if_warm(base, 1, guidance_scale=7.0, width=side, height=side):
                times.append(timed(lambda: text_call(text, side=side, steps=steps), device))
        with compiled_if_warm(base, 1, guidance_scale=7.0, width=side, height=side):
            fast = text_call(text, side=side, steps=steps).images.float().cpu()
    result["txt2img_compiled_s"] = [round(t, 3) for t in times]
    result["txt2img_new_graphs_at_warm_shape"] = frames_compiled() - before
    result["first_over_median_of_rest"] = round(times[0] / statistics.median(times[1:]), 2)
    result["finite"] = bool(torch.isfinite(fast).all())
    diff = (fast - reference).abs()
    result["latent_diff_vs_eager"] = {"max": round(float(diff.max()), 4), "mean": round(float(diff.mean()), 5)}

    # img2img at strength 1 on the same compiled UNet, for the step speed.
    from PIL import Image

    picture = Image.new("RGB", (side, side), (120, 120, 120))
    with torch.inference_mode(), compiled_if_warm(base, 1, guidance_scale=7.0, width=side, height=side):
        img_time = timed(
            lambda: base(
                prompt=["a lighthouse at dusk"],
                negative_prompt=["blurry"],
                image=picture,
                strength=1.0,
                num_inference_steps=steps,
                guidance_scale=7.0,
                output_type="latent",
            ),
            device,
        )
    result["img2img_compiled_s"] = round(img_time, 3)

    # A shape never warmed: eager, compiling nothing.
    other = side // 2
    before = frames_compiled()
    with torch.inference_mode(), compiled_if_warm(base, 1, guidance_scale=7.0, width=other, height=other):
        result["unwarmed_shape_s"] = round(timed(lambda: text_call(text, side=other, steps=steps), device), 3)
    result["new_graphs_at_unwarmed_shape"] = frames_compiled() - before
    out[family] = result
    print(json.dumps({family: result}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--families", default="sd15,sdxl")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__}
    for family in args.families.split(","):
        check(family, device=device, tiny=args.tiny, steps=args.steps, out=out)
        free(device)  # the family's pipelines went with check()'s frame
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
