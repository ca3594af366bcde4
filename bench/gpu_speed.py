"""Benchmark: GPU speed of the worker's pipelines against vanilla diffusers,
measured in one run on one card. Prints figures, not pass/fail.

    python bench/gpu_speed.py              # CUDA: full-size SD 1.5 and SDXL
    python bench/gpu_speed.py --tiny       # anywhere: tiny configs (checks the script)

No weights are downloaded: full-size random-weight pipelines of the real
architectures are built directly on the device (SD 1.5: UNet
320/640/1280/1280 with 768-dim cross attention, CLIP ViT-L text encoder, the
4-level VAE; SDXL: its UNet, both text encoders, its VAE). Speed is the same
as with real weights. Needs torch, transformers and diffusers only (no
Django), so it runs on a bare GPU machine.

Stages, each for every family before the next (later stages are skipped
when --budget runs out; every figure is printed and written to --out as it
is measured):
1. vanilla: diffusers as it comes (fp16, its default attention), batch 1,
   then eager: the worker's non-compiling speed-ups (workers.accel);
2. fast: all the worker's speed-ups (workers.accel.Speedups.all(), what a
   CUDA worker runs) at batch 1, with the warm-up's time (what a first job
   would pay without it); quality: the same seed through vanilla fp16, fast
   fp16 and an fp32 copy: the fast path's difference from vanilla is set
   against fp16's own difference from fp32 (the precision already served);
3. fast at batch 8 (different prompts and seeds: jobs of different people);
4. vanilla at batch 8;
5. load: save to local disk, then load to first picture (warm page cache).

it/s is denoising steps per second with classifier-free guidance, measured as
the difference of two runs (N2 - N1 steps over their time difference), so the
text encoders and the VAE are left out, as in diffusers' progress bar.
images/s is end to end at --steps steps (text encoders, loop, VAE decode).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from workers.accel import Speedups, speed_up, warm_up

PROMPTS = [
    "a red fox in the snow, photo",
    "an old lighthouse at dusk",
    "a bowl of ramen, studio light",
    "portrait of a cat wearing a hat",
    "a city street in the rain at night",
    "watercolor of mountains and a lake",
    "a robot reading a book",
    "a field of sunflowers, wide angle",
]
STARTED = time.perf_counter()
RESULTS: dict = {}


def elapsed() -> float:
    return time.perf_counter() - STARTED


def say(text: str) -> None:
    print(f"[{elapsed():6.1f}s] {text}", flush=True)


def record(out: Path, key: str, value) -> None:
    RESULTS[key] = value
    out.write_text(json.dumps(RESULTS, indent=1, default=str))


# --- Random-weight pipelines of the real architectures ------------------------------


def _tokenizer():
    from workers.testweights import _tokenizer as tiny_vocab_tokenizer

    return tiny_vocab_tokenizer(Path(tempfile.mkdtemp()) / "tok")


def _text_encoder(*, hidden: int, layers: int, heads: int, inter: int, act: str, with_projection: bool, tiny: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if tiny:
        hidden, layers, heads, inter = 32, 2, 4, 37
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=hidden,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _vae(*, sample_size: int, tiny: bool, scaling: float = 0.18215, force_upcast: bool = False):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32) if tiny else (128, 256, 512, 512),
        layers_per_block=1 if tiny else 2,
        norm_num_groups=8 if tiny else 32,
        latent_channels=4,
        sample_size=sample_size,
        scaling_factor=scaling,
        force_upcast=force_upcast,
    )


def build(family: str, *, device: str, dtype, tiny: bool):
    """A full-size (or --tiny) random-weight txt2img pipeline, built on the device."""
    from diffusers import (
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    # Schedulers keep their tables on the CPU (they convert them with numpy).
    if family == "sd15":
        scheduler = DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        )
    else:
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            timestep_spacing="leading",
            steps_offset=1,
        )
    with torch.device(device):
        if family == "sd15":
            unet = UNet2DConditionModel(
                sample_size=64,
                block_out_channels=(32, 64) if tiny else (320, 640, 1280, 1280),
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D")
                if tiny
                else ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")
                if tiny
                else ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                cross_attention_dim=32 if tiny else 768,
                attention_head_dim=8,
                layers_per_block=2,
                norm_num_groups=32,
            )
            pipe = StableDiffusionPipeline(
                vae=_vae(sample_size=512, tiny=tiny),
                text_encoder=_text_encoder(
                    hidden=768, layers=12, heads=12, inter=3072, act="quick_gelu", with_projection=False, tiny=tiny
                ),
                tokenizer=tokenizer,
                unet=unet,
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        else:
            unet = UNet2DConditionModel(
                sample_size=128,
                block_out_channels=(32, 64) if tiny else (320, 640, 1280),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D")
                if tiny
                else ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")
                if tiny
                else ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                transformer_layers_per_block=(1, 2) if tiny else (1, 2, 10),
                attention_head_dim=(2, 4) if tiny else (5, 10, 20),
                cross_attention_dim=64 if tiny else 2048,
                use_linear_projection=True,
                addition_embed_type="text_time",
                addition_time_embed_dim=8 if tiny else 256,
                projection_class_embeddings_input_dim=80 if tiny else 2816,
                layers_per_block=2,
                norm_num_groups=32,
            )
            pipe = StableDiffusionXLPipeline(
                vae=_vae(sample_size=1024, tiny=tiny, scaling=0.13025, force_upcast=True),
                text_encoder=_text_encoder(
                    hidden=768, layers=12, heads=12, inter=3072, act="quick_gelu", with_projection=False, tiny=tiny
                ),
                text_encoder_2=_text_encoder(
                    hidden=1280, layers=32, heads=20, inter=5120, act="gelu", with_projection=True, tiny=tiny
                ),
                tokenizer=tokenizer,
                tokenizer_2=tokenizer,
                unet=unet,
                scheduler=scheduler,
            )
    pipe.to(dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- Measuring ---------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def call(pipe, *, batch: int, side: int, steps: int, output_type: str, seed: int = 0):
    return pipe(
        prompt=PROMPTS[:batch] if batch <= len(PROMPTS) else (PROMPTS * batch)[:batch],
        negative_prompt=["blurry"] * batch,
        num_inference_steps=steps,
        guidance_scale=7.0,
        width=side,
        height=side,
        generator=[torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)],
        output_type=output_type,
    )


def timed(fn, device: str) -> float:
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def speed(pipe, *, device: str, batch: int, side: int, n1: int, n2: int, steps: int, reps: int) -> dict:
    """it/s of the denoising loop and end-to-end images/s at `steps`."""
    with torch.inference_mode():
        call(pipe, batch=batch, side=side, steps=n1, output_type="latent")  # warm
        short = statistics.median(
            timed(lambda: call(pipe, batch=batch, side=side, steps=n1, output_type="latent"), device)
            for _ in range(reps)
        )
        long = statistics.median(
            timed(lambda: call(pipe, batch=batch, side=side, steps=n2, output_type="latent"), device)
            for _ in range(reps)
        )
        whole = statistics.median(
            timed(lambda: call(pipe, batch=batch, side=side, steps=steps, output_type="np"), device)
            for _ in range(max(1, reps - 1))
        )
    its = (n2 - n1) / max(long - short, 1e-9)
    return {"it_s": round(its, 2), "ms_per_step": round(1000 / its, 2), "images_s": round(batch / whole, 3)}


def image_of(pipe, *, side: int, steps: int):
    """The same seed's final latents and its picture (floats in [0, 1])."""
    with torch.inference_mode():
        latents = call(pipe, batch=1, side=side, steps=steps, output_type="latent", seed=1234).images
        out = call(pipe, batch=1, side=side, steps=steps, output_type="np", seed=1234)
    return latents.float().cpu(), torch.from_numpy(out.images[0]).float()


def pixel_diff(a, b) -> dict:
    """Final latents: relative difference ||a - b|| / ||b||. Pictures: mean
    and 99th-percentile absolute difference in 8-bit levels."""
    (latent_a, image_a), (latent_b, image_b) = a, b
    levels = (image_a.clamp(0, 1) * 255 - image_b.clamp(0, 1) * 255).abs().flatten()
    return {
        "latents_rel": float(f"{((latent_a - latent_b).norm() / latent_b.norm().clamp_min(1e-12)).item():.3g}"),
        "pixels_mean": round(levels.mean().item(), 3),
        "pixels_p99": round(levels.kthvalue(max(1, int(0.99 * levels.numel()))).values.item(), 3),
        "nan": bool(torch.isnan(latent_a).any() or torch.isnan(latent_b).any() or torch.isnan(image_a).any()),
    }


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# --- The run ------------------------------------------------------------------------


class Family:
    """One family's pipeline through the stages; figures go to RESULTS."""

    def __init__(self, name: str, args, out: Path) -> None:
        self.name, self.args, self.out = name, args, out
        self.device, self.tiny = args.device, args.tiny
        self.dtype = torch.float32 if self.device == "cpu" else torch.float16
        self.side = args.side or (64 if self.tiny else (512 if name == "sd15" else 1024))
        # SDXL steps cost about 4x SD 1.5's: fewer of them keep the run short.
        self.n1, self.n2, self.steps = (args.n1, args.n2, args.steps) if name == "sd15" else (3, 13, 10)
        self.pipe = self.reference = self.fp32 = None
        self.compiled = False

    def left(self) -> float:
        return self.args.budget - elapsed()

    def measure(self, path: str, batch: int, note: str = "") -> None:
        figures = speed(
            self.pipe,
            device=self.device,
            batch=batch,
            side=self.side,
            n1=self.n1,
            n2=self.n2,
            steps=self.steps,
            reps=self.args.reps,
        )
        record(self.out, f"{self.name}.{path}.b{batch}", figures)
        say(f"{self.name} {path:8} batch {batch}: {figures} {note}")

    def baseline(self) -> None:
        """Build; vanilla batch 1; the reference pictures; the eager speed-ups."""
        started = time.perf_counter()
        self.pipe = build(self.name, device=self.device, dtype=self.dtype, tiny=self.tiny)
        sync(self.device)
        say(f"{self.name}: built at {self.side} px in {time.perf_counter() - started:.1f} s")
        self.measure("vanilla", 1)
        self.reference = image_of(self.pipe, side=self.side, steps=self.steps)
        if not self.args.skip_fp32:
            wide = copy.deepcopy(self.pipe).to(torch.float32)
            self.fp32 = image_of(wide, side=self.side, steps=self.steps)
            del wide
            free(self.device)
        eager = Speedups(sdpa=True, channels_last=True, fused_qkv=True)
        speed_up(self.pipe, eager)
        self.measure("eager", 1, f"({', '.join(eager.names())})")

    def fast(self, batch: int) -> None:
        """All the worker's speed-ups, after the warm-up at this batch size."""
        if self.args.no_compile:
            return
        if self.left() < self.args.reserve:
            say(f"{self.name}: fast batch {batch} skipped (budget)")
            return
        if not self.compiled:
            everything = Speedups.all()
            speed_up(self.pipe, Speedups(compile=everything.compile, compile_vae=everything.compile_vae))
            self.compiled = True
        warm = warm_up(self.pipe, width=self.side, height=self.side, batch=batch)
        record(self.out, f"{self.name}.fast.b{batch}.warm_up_s", round(warm, 1))
        self.measure("fast", batch, f"(warm-up {warm:.1f} s; {', '.join(Speedups.all().names())})")
        if batch == 1:
            self.quality()

    def quality(self) -> None:
        fast_image = image_of(self.pipe, side=self.side, steps=self.steps)
        quality = {"fast_vs_vanilla": pixel_diff(fast_image, self.reference)}
        if self.fp32 is not None:
            quality["fp16_vs_fp32"] = pixel_diff(self.reference, self.fp32)
            quality["fast_vs_fp32"] = pixel_diff(fast_image, self.fp32)
        record(self.out, f"{self.name}.quality", quality)
        say(f"{self.name} quality ({self.steps} steps, same seed): {quality}")

    def vanilla_batch(self, batch: int) -> None:
        """Batch `batch` through a fresh vanilla pipeline (same seed weights)."""
        if self.left() < self.args.reserve / 2:
            say(f"{self.name}: vanilla batch {batch} skipped (budget)")
            return
        compiled, self.pipe = self.pipe, build(self.name, device=self.device, dtype=self.dtype, tiny=self.tiny)
        try:
            self.measure("vanilla", batch)
        finally:
            self.pipe = compiled
            free(self.device)

    def load(self) -> None:
        """Save to local disk, then time the load and the first picture."""
        if not self.args.load or self.left() < 60:
            return
        folder = Path(tempfile.mkdtemp(dir=self.args.tmp))
        plain = build(self.name, device=self.device, dtype=self.dtype, tiny=self.tiny)
        plain.save_pretrained(folder, safe_serialization=True)
        del plain
        free(self.device)
        os.sync()
        from diffusers import DiffusionPipeline

        started = time.perf_counter()
        loaded = DiffusionPipeline.from_pretrained(folder, dtype=self.dtype).to(self.device)
        loaded.set_progress_bar_config(disable=True)
        sync(self.device)
        load_s = time.perf_counter() - started
        first = timed(lambda: image_of(loaded, side=self.side, steps=self.steps), self.device) / 2
        record(self.out, f"{self.name}.load", {"load_s": round(load_s, 2), "first_image_s": round(first, 2)})
        say(f"{self.name}: load from warm disk {load_s:.2f} s; first picture (eager, {self.steps} steps) {first:.2f} s")
        loaded = None
        free(self.device)


def staged(families: list[Family], stage: str, *args) -> None:
    """Run one stage for every family; a failure loses only that figure."""
    for family in families:
        try:
            getattr(family, stage)(*args)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            record(family.out, f"{family.name}.{stage}.error", repr(exc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs (CPU smoke run)")
    parser.add_argument("--families", default="sd15,sdxl")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--side", type=int, default=0, help="picture side (default: the family's native)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--n1", type=int, default=5)
    parser.add_argument("--n2", type=int, default=25)
    parser.add_argument("--steps", type=int, default=20, help="steps for images/s and the quality check")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget", type=float, default=520, help="seconds; later stages are skipped past it")
    parser.add_argument("--reserve", type=float, default=120, help="seconds a compile stage needs")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--skip-fp32", action="store_true")
    parser.add_argument("--load", action="store_true", help="also time load to first image")
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_speed.json"))
    args = parser.parse_args()
    out = Path(args.out)
    import diffusers
    import transformers

    info = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}
    if args.device == "cuda":
        info["card"] = torch.cuda.get_device_name(0)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    record(out, "info", info)
    say(f"{info}")
    # The figures that matter most first: batch 1 of every family, then batching.
    families = [Family(name, args, out) for name in args.families.split(",")]
    staged(families, "baseline")
    staged(families, "fast", 1)
    staged(families, "fast", args.batch)
    staged(families, "vanilla_batch", args.batch)
    staged(families, "load")
    summary(args)


def summary(args) -> None:
    print(
        "\n| family | path | batch | it/s | ms/step | images/s | it/s vs vanilla b1 | images/s vs same path b1 "
        "| images/s vs vanilla b1 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for family in args.families.split(","):
        base = RESULTS.get(f"{family}.vanilla.b1")
        for path in ("vanilla", "eager", "fast"):
            b1 = RESULTS.get(f"{family}.{path}.b1")
            for batch in (1, args.batch):
                row = RESULTS.get(f"{family}.{path}.b{batch}")
                if not row or not base:
                    continue
                its = f"{row['it_s'] / base['it_s']:.2f}x" if batch == 1 else "-"
                same = f"{row['images_s'] / b1['images_s']:.2f}x" if b1 else "-"
                print(
                    f"| {family} | {path} | {batch} | {row['it_s']} | {row['ms_per_step']} | {row['images_s']} "
                    f"| {its} | {same} | {row['images_s'] / base['images_s']:.2f}x |"
                )
    print(json.dumps({k: v for k, v in RESULTS.items() if "quality" in k or "load" in k or "error" in k}))


if __name__ == "__main__":
    main()
