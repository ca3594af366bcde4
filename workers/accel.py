"""Fast inference on CUDA: what a loaded pipeline is changed into before it
serves jobs, and the warm-up that keeps compilation out of paid jobs.

Plain torch and diffusers, no Django: bench/gpu_speed.py applies exactly this
to full-size pipelines on a GPU and measures each step against vanilla
diffusers in the same run. The worker applies it on CUDA (runtime._load),
chosen by the WORKER_SPEEDUPS setting.

What each speed-up does (all keep the checkpoint's weights and dtype):
- sdpa: PyTorch's fused attention (diffusers' default since torch 2; named so
  a pipeline that was set otherwise is put back on it).
- channels_last: NHWC memory layout for the UNet and VAE convolutions, the
  layout the tensor cores' convolution kernels want.
- fused_qkv: one matrix product for the query, key and value projections of
  self-attention (and key and value of cross-attention) instead of three.
- compile: torch.compile of the UNet (inductor kernels that fuse the
  elementwise work around each matrix product), mode "reduce-overhead", which
  also replays the whole UNet as one CUDA graph: at batch 1 an eager UNet
  spends most of a step launching about a thousand small kernels.
- compile_vae: the same for the VAE decoder (default mode, no CUDA graphs).

Compiled code is specialised to the shapes it saw: a new picture size or
batch size compiles again (70 to 140 s for a full UNet on an H200). So no
job ever compiles: warm_up compiles a handful of shapes (the family's native
side, batches of 1, 2, 4, 8 ... pictures, guidance on) before the worker
takes jobs, a compiled pipeline pads a batch up to the next warm size
(padded_size), and any other shape runs the same modules eagerly
(compiled_if_warm). Inductor's on-disk cache (TORCHINDUCTOR_CACHE_DIR, set
by the worker under VAR_DIR) makes the next start load those kernels
instead of compiling them again.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields

log = logging.getLogger(__name__)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Speedups:
    sdpa: bool = False
    channels_last: bool = False
    fused_qkv: bool = False
    compile: bool = False
    compile_vae: bool = False

    @classmethod
    def parse(cls, text: str, *, device: str) -> Speedups:
        """ "auto" (everything on CUDA, nothing elsewhere), "none", or a comma
        list of names: "sdpa,channels_last,fused_qkv,compile"."""
        text = text.strip().lower()
        if text == "auto":
            return cls.all() if device == "cuda" else cls()
        if text in ("", "none", "off"):
            return cls()
        names = {name.strip() for name in text.split(",") if name.strip()}
        known = {field.name for field in fields(cls)}
        if unknown := names - known:
            raise ValueError(f"unknown speed-ups {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{name: True for name in names})

    @classmethod
    def all(cls) -> Speedups:
        return cls(sdpa=True, channels_last=True, fused_qkv=True, compile=True, compile_vae=False)

    def names(self) -> list[str]:
        return [field.name for field in fields(self) if getattr(self, field.name)]

    def __bool__(self) -> bool:
        return bool(self.names())


def speed_up(pipe, speedups: Speedups) -> list[str]:
    """Apply `speedups` to the pipeline in place; the names applied."""
    import torch

    applied = []
    unet, vae = getattr(pipe, "unet", None), getattr(pipe, "vae", None)
    if unet is None:
        return applied
    if speedups.sdpa:
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())
        applied.append("sdpa")
    if speedups.channels_last:
        unet.to(memory_format=torch.channels_last)
        if vae is not None:
            vae.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    if speedups.fused_qkv and hasattr(pipe, "fuse_qkv_projections"):
        pipe.fuse_qkv_projections(unet=True, vae=vae is not None)
        applied.append("fused_qkv")
    if speedups.compile or speedups.compile_vae:
        _inductor_settings()
    if speedups.compile:
        unet.compile(mode="reduce-overhead", fullgraph=True)
        pipe._accel_warm = set()  # the (pictures, guided, width, height) shapes warmed up
        applied.append("compile")
    if speedups.compile_vae and vae is not None:
        vae.decoder.compile(fullgraph=True)
        applied.append("compile_vae")
    return applied


def guided(pipe, guidance_scale: float) -> bool:
    """Whether a call runs classifier-free guidance (two UNet rows a picture)."""
    return guidance_scale > 1 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None


def padded_size(pipe, pictures: int, *, guidance_scale: float, width: int, height: int) -> int:
    """The batch a call of `pictures` runs at: on a compiled pipeline the
    smallest warm batch that holds them (the extra rows are thrown away),
    else `pictures`."""
    warm = getattr(pipe, "_accel_warm", None) or set()
    shape = (guided(pipe, guidance_scale), width, height)
    sizes = [size for size, *rest in warm if tuple(rest) == shape and size >= pictures]
    return min(sizes, default=pictures)


@contextmanager
def compiled_if_warm(pipe, pictures: int, *, guidance_scale: float, width: int, height: int, eager: bool = False):
    """Run the compiled UNet only at a shape warm_up compiled; any other
    shape runs eagerly (the same modules and weights), never compiling in a
    job. `eager`: eagerly at any shape (a ControlNet call passes the UNet
    residuals its compiled graph was not captured with)."""
    warm = getattr(pipe, "_accel_warm", None)
    if warm is None or (not eager and (pictures, guided(pipe, guidance_scale), width, height) in warm):
        yield
        return
    unet = pipe.unet
    compiled, unet._compiled_call_impl = unet._compiled_call_impl, None
    try:
        yield
    finally:
        unet._compiled_call_impl = compiled


def warm_batches(largest: int) -> list[int]:
    """The batch sizes to warm for calls of up to `largest` pictures."""
    return [size for size in BATCH_BUCKETS if size < largest] + [
        next(size for size in BATCH_BUCKETS if size >= largest)
    ]


def _inductor_settings() -> None:
    """Inductor options diffusers' own speed guide uses for UNets: 1x1
    convolutions as matrix products, and no epilogue fusion (it slows the
    matrix products it is fused into)."""
    import torch._inductor.config as inductor

    inductor.conv_1x1_as_mm = True
    inductor.epilogue_fusion = False
    # One recompile per picture size and batch size the worker meets.
    import torch._dynamo.config as dynamo

    dynamo.cache_size_limit = max(dynamo.cache_size_limit, 64)


def warm_up(
    pipe, *, width: int, height: int, batch: int = 1, image=None, steps: int = 2, guidance_scale: float = 7.0
) -> float:
    """Run the pipeline on throwaway inputs at this size and batch, so the
    compilation and CUDA-graph capture happen now rather than in a paid job,
    and mark the shape warm. Call it from the thread that runs the jobs
    (CUDA graphs are recorded per thread). Seconds taken."""
    import torch
    from PIL import Image

    started = time.perf_counter()
    options = {
        "prompt": ["warm up"] * batch,
        "num_inference_steps": steps,
        "guidance_scale": guidance_scale,
        "width": width,
        "height": height,
        "output_type": "pil",
    }
    if image is not None or _takes_image(pipe):
        options.pop("width"), options.pop("height")
        options["image"] = image or Image.new("RGB", (width, height), (127, 127, 127))
        options["strength"] = 1.0
    with torch.inference_mode():
        for _ in range(3):  # compile, then CUDA-graph warm-up and capture
            pipe(**options)
    warm = getattr(pipe, "_accel_warm", None)
    if warm is not None:
        warm.add((batch, guided(pipe, guidance_scale), width, height))
    seconds = time.perf_counter() - started
    log.info("warmed up %s at %sx%s batch %s in %.1f s", type(pipe).__name__, width, height, batch, seconds)
    return seconds


def _takes_image(pipe) -> bool:
    import inspect

    return "image" in inspect.signature(pipe.__call__).parameters
