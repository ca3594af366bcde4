"""The diffusers runtime: device and dtype, loading a checkpoint's img2img
pipeline through diffusers' own classes, deriving its text-to-image
pipeline from it, and running either.

Only workers/ imports torch and diffusers, and only inside functions that a
worker calls, so importing this module's callers stays cheap for the web tier.
Loading never reaches the network: hub repos resolve to a local copy
(MODELS_DIR/<org>/<name> or the Hugging Face cache) or fail as missing weights.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from catalog.families import FAMILIES
from catalog.modes import Mode
from catalog.samplers import sampler
from generation.params import JobParams
from workers.errors import BadInput, Canceled, MissingWeights, classify
from workers.preview import latents_preview
from workers.spec import CheckpointSpec, ControlNetSpec

log = logging.getLogger(__name__)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Compiled kernels (WORKER_SPEEDUPS=compile) persist here across restarts.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(settings.VAR_DIR) / "torch-compile"))

# model_index.json entries that hold weights worth sharing between pipelines.
_MODEL_COMPONENTS = {"unet", "vae", "text_encoder", "text_encoder_2", "text_encoder_3", "transformer"}


def pick_device() -> str:
    import torch

    wanted = os.environ.get("WORKER_DEVICE", "auto")
    if wanted != "auto":
        return wanted
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(spec: CheckpointSpec, device: str):
    """fp16 (bf16 for SD3/FLUX) on accelerators, fp32 on the CPU, where
    half precision is slow or unsupported."""
    import torch

    if device == "cpu":
        return torch.float32
    if spec.dtype != "auto":
        return getattr(torch, spec.dtype)
    return torch.bfloat16 if spec.family in ("sd3", "flux") else torch.float16


def module_bytes(module) -> int:
    """Memory a torch module's parameters and buffers take."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


# The diffusers class that runs img2img for each catalog family, by name (so
# this module imports diffusers only when a pipeline is loaded).
IMG2IMG_CLASSES = {
    "sd1": "StableDiffusionImg2ImgPipeline",
    "sd2": "StableDiffusionImg2ImgPipeline",
    "sd-turbo": "StableDiffusionImg2ImgPipeline",
    "sdxl": "StableDiffusionXLImg2ImgPipeline",
    "sdxl-turbo": "StableDiffusionXLImg2ImgPipeline",
    "sd3": "StableDiffusion3Img2ImgPipeline",
    "flux": "FluxImg2ImgPipeline",
}


# The text-to-image class of each family. A worker never loads it: it is
# built from the loaded img2img pipeline with from_pipe (mode_pipeline), so
# both modes of a checkpoint share every module and the cache counts them once.
TEXT2IMG_CLASSES = {
    "sd1": "StableDiffusionPipeline",
    "sd2": "StableDiffusionPipeline",
    "sd-turbo": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sdxl-turbo": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}


# The inpainting class of each family, built with from_pipe like text to
# image's. With a regular checkpoint's 4-channel UNet diffusers blends the
# masked latents at each step; a dedicated inpainting checkpoint (a 9-channel
# UNet: latents, mask, masked picture) runs the same class.
INPAINT_CLASSES = {
    "sd1": "StableDiffusionInpaintPipeline",
    "sd2": "StableDiffusionInpaintPipeline",
    "sd-turbo": "StableDiffusionInpaintPipeline",
    "sdxl": "StableDiffusionXLInpaintPipeline",
    "sdxl-turbo": "StableDiffusionXLInpaintPipeline",
    "sd3": "StableDiffusion3InpaintPipeline",
    "flux": "FluxInpaintPipeline",
}
MODE_CLASSES = {Mode.TXT2IMG: TEXT2IMG_CLASSES, Mode.INPAINT: INPAINT_CLASSES}

# ControlNet's classes by architecture (generation.models.CONTROLNET_ARCHITECTURES):
# from the prompt alone, and from a picture (image to image).
CONTROLNET_CLASSES = {
    "sd1": ("StableDiffusionControlNetPipeline", "StableDiffusionControlNetImg2ImgPipeline"),
    "sdxl": ("StableDiffusionXLControlNetPipeline", "StableDiffusionXLControlNetImg2ImgPipeline"),
}


def preload(families: set[str]) -> None:
    """Import torch, diffusers and the pipeline classes of `families` in the
    worker's main process, before it forks its pool: a pool process that
    dies is replaced in a fraction of a second instead of re-importing them
    (several seconds). Imports only: no device is touched before the fork."""
    import diffusers
    import torch  # noqa: F401

    for family in families:
        for classes in (IMG2IMG_CLASSES, TEXT2IMG_CLASSES, INPAINT_CLASSES):
            if name := classes.get(family):
                getattr(diffusers, name)
        for name in CONTROLNET_CLASSES.get(FAMILIES[family].architecture, ()):
            getattr(diffusers, name)


def pipeline_class(spec: CheckpointSpec):
    import diffusers

    name = IMG2IMG_CLASSES.get(spec.family)
    if name is None:
        raise BadInput(f"unknown pipeline family {spec.family!r}")
    return getattr(diffusers, name)


def mode_pipeline(pipe, spec: CheckpointSpec, mode: str):
    """The pipeline that runs `mode` on the loaded (img2img) `pipe`: pipe
    itself, or the text-to-image or inpainting pipeline built from its
    modules with diffusers' from_pipe once and kept on it (so it goes with
    pipe when the cache evicts it). Shared modules mean shared speed-ups and
    no new memory."""
    if mode == Mode.IMG2IMG:
        return pipe
    if mode not in MODE_CLASSES:
        raise BadInput(f"this worker does not run {mode!r} jobs")
    built = pipe.__dict__.setdefault("_portal_modes", {})
    if mode not in built:
        import diffusers

        name = MODE_CLASSES[mode].get(spec.family)
        if name is None:
            raise BadInput(f"no {mode} pipeline for family {spec.family!r}")
        text = getattr(diffusers, name).from_pipe(pipe)
        text.set_progress_bar_config(disable=True)
        built[mode] = text
    return built[mode]


def controlnet_pipeline(pipe, spec: CheckpointSpec, controlnet, *, from_picture: bool):
    """The ControlNet pipeline over the loaded `pipe`'s modules and
    `controlnet` (diffusers' from_pipe: nothing is copied), from the prompt
    alone or from a picture. Built per job, since a ControlNet is chosen per
    job; it shares every module, so it adds no memory."""
    import diffusers

    names = CONTROLNET_CLASSES.get(FAMILIES[spec.family].architecture)
    if names is None or spec.inpainting:
        raise BadInput(f"no ControlNet pipeline for family {spec.family!r}")
    built = getattr(diffusers, names[from_picture]).from_pipe(pipe, controlnet=controlnet)
    built.set_progress_bar_config(disable=True)
    return built


def use_sampler(runner, pipe, spec: CheckpointSpec, name: str, *, seeds: list[int]) -> None:
    """Give `runner` (the call's pipeline over `pipe`'s modules) the sampler
    `name` (catalog.samplers), built once per pipeline from the loaded
    scheduler's config (its spacing and prediction type are the
    checkpoint's) and kept on `pipe`; "" is the checkpoint's own scheduler.
    Nothing else changes: no weights load, a compiled UNet stays compiled.
    A scheduler's state is per call (every pipeline call sets its timesteps
    anew), and one pipeline runs one call at a time. A sampler whose noise is
    a Brownian tree gets one tree per row, seeded like the row's generator,
    so a job's pixels do not depend on what it was batched with."""
    built = pipe.__dict__.setdefault("_portal_samplers", {})
    built.setdefault("", pipe.scheduler)  # as loaded, before any call replaced it
    if name not in built:
        import diffusers

        try:
            chosen = sampler(spec.family, name)
        except KeyError:
            raise BadInput(f"no sampler {name!r} for family {spec.family!r}") from None
        built[name] = getattr(diffusers, chosen.scheduler).from_config(built[""].config, **chosen.options)
    scheduler = built[name]
    if name and sampler(spec.family, name).seeded_per_row:
        scheduler.noise_sampler_seed = list(seeds)
    runner.scheduler = scheduler


def load_controlnet(spec: ControlNetSpec, *, device: str, dtype):
    """A ControlNet's network from its local weights (never downloads)."""
    try:
        from diffusers import ControlNetModel

        path = spec.local_path()
        if path is None:
            raise MissingWeights(f"no local weights for ControlNet {spec.source!r}")
        # safetensors only: pickled weights are refused, as for checkpoints.
        options: dict[str, Any] = {"dtype": dtype, "local_files_only": True, "use_safetensors": True}
        if spec.variant:
            options["variant"] = spec.variant
        model = ControlNetModel.from_pretrained(str(path), **options)
        return model.to(device) if device != "cpu" else model
    except Exception as exc:
        raise classify(exc) from exc


# --- Loading -----------------------------------------------------------------------

_fingerprints: dict[tuple, str] = {}


def component_fingerprint(folder: Path) -> str:
    """Identity of a component's weights: equal files, equal fingerprint.

    Hub-cache files are links to blobs named by their sha256, which is used
    as is; other files are hashed once per process (keyed by size and mtime).
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        real = path.resolve()
        stat = real.stat()
        key = (str(real), stat.st_size, stat.st_mtime_ns)
        if key not in _fingerprints:
            if len(real.name) == 64 and all(c in "0123456789abcdef" for c in real.name):
                _fingerprints[key] = real.name
            else:
                file_hash = hashlib.sha256()
                with open(real, "rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        file_hash.update(chunk)
                _fingerprints[key] = file_hash.hexdigest()
        digest.update(f"{path.name}:{_fingerprints[key]}\n".encode())
    return digest.hexdigest()


def load_pipeline(
    spec: CheckpointSpec, *, device: str, shared: dict[str, Any] | None = None
) -> tuple[Any, dict[str, str]]:
    """Load `spec`'s img2img pipeline on `device`.

    `shared` maps component keys to modules already in memory; a component of
    this checkpoint with the same key is reused instead of loaded again.
    Returns the pipeline and {component name: key} for the cache.
    """
    try:
        return _load(spec, device=device, shared=shared or {})
    except Exception as exc:
        raise classify(exc) from exc


def _load(spec: CheckpointSpec, *, device: str, shared: dict[str, Any]):
    cls = pipeline_class(spec)
    dtype = pick_dtype(spec, device)
    path = spec.local_path()
    if path is None:
        raise MissingWeights(f"no local weights for {spec.source_kind} {spec.source!r}")
    options: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if spec.family in ("sd1", "sd2", "sd-turbo"):
        options.update(safety_checker=None, requires_safety_checker=False)

    if spec.source_kind == "single_file":
        # from_single_file needs the architecture's config; offline it must be
        # a local diffusers folder (MODELS_DIR/configs/<family>).
        config = Path(settings.MODELS_DIR) / "configs" / spec.family
        if config.is_dir():
            options["config"] = str(config)
        pipe = cls.from_single_file(str(path), **options)
        keys = {}
    else:
        if spec.variant:
            options["variant"] = spec.variant
        keys = _component_keys(path, dtype=str(dtype), device=device)
        reused = {name: shared[key] for name, key in keys.items() if key in shared}
        pipe = cls.from_pretrained(str(path), **options, **reused)
        if reused:
            log.info("%s: reused %s from loaded checkpoints", spec.slug, ", ".join(sorted(reused)))
    pipe.set_progress_bar_config(disable=True)
    if device != "cpu":
        pipe = pipe.to(device)
    _speed_up(pipe, spec, device)
    return pipe, keys


def _speed_up(pipe, spec: CheckpointSpec, device: str) -> None:
    """WORKER_SPEEDUPS (workers/accel.py; all of them on CUDA by default).
    Compilation is lazy and happens only in warm_up_pipeline, never in a job."""
    from workers.accel import Speedups, speed_up

    speedups = Speedups.parse(settings.WORKER_SPEEDUPS, device=device)
    if speedups:
        applied = speed_up(pipe, speedups)
        log.info("%s: speed-ups %s", spec.slug, ", ".join(applied) or "none applicable")


def warm_up_pipeline(pipe, spec: CheckpointSpec, *, largest_batch: int) -> None:
    """Compile a compiled pipeline at the family's native side, guidance on
    (off for turbo families), for every batch size up to `largest_batch`
    pictures. Nothing to do for a pipeline that is not compiled."""
    from workers.accel import warm_batches, warm_up

    # A dedicated inpainting checkpoint's UNet takes 9 channels: the
    # warm-up's image to image calls cannot run it; its jobs run uncompiled.
    if getattr(pipe, "_accel_warm", None) is None or spec.inpainting:
        return
    family = FAMILIES[spec.family]
    for batch in warm_batches(largest_batch):
        seconds = warm_up(
            pipe,
            width=family.native_side,
            height=family.native_side,
            batch=batch,
            guidance_scale=0.0 if family.turbo else 7.0,
        )
        log.warning("%s: warmed up batch %s at %s px in %.1f s", spec.slug, batch, family.native_side, seconds)


def _component_keys(path: Path, *, dtype: str, device: str) -> dict[str, str]:
    index = json.loads((path / "model_index.json").read_text())
    keys = {}
    for name, value in index.items():
        if name in _MODEL_COMPONENTS and isinstance(value, list) and value[0] and (path / name).is_dir():
            keys[name] = f"{value[1]}:{component_fingerprint(path / name)}:{dtype}:{device}"
    return keys


# --- Running -----------------------------------------------------------------------

ProgressCallback = Callable[[int, int], bool]


PREVIEW_EVERY = 4


@dataclass
class BatchItem:
    """One job's part of a pipeline call: its input (None for text to image
    and ControlNet from the prompt), settings, callbacks, inpainting's mask
    (L, white = change) and ControlNet's map."""

    image: Any
    params: JobParams
    on_step: ProgressCallback | None = None
    # Every few steps, a callable that makes a small approximate picture of
    # the run so far (or None), for the receiver to call when it likes.
    on_preview: Callable[[Callable[[], Any]], None] | None = None
    mask: Any = None
    control: Any = None  # ControlNet's map (RGB, the job's output size)


def run_img2img(
    pipe,
    spec: CheckpointSpec,
    image,
    params: JobParams,
    on_step: ProgressCallback | None = None,
    on_preview: Callable[[Any], None] | None = None,
):
    """Run one job's img2img and return its PIL images (run_batch with one
    item: a job alone and the same job in a batch take the same path)."""
    return run_batch(pipe, spec, [BatchItem(image, params, on_step, on_preview)])[0]


def run_batch(
    pipe, spec: CheckpointSpec, items: list[BatchItem], *, controlnet=None, loras: list = ()
) -> list[list | None]:
    """Run several jobs that share a batch_key (JobParams.batch_key, the mode
    included) in one pipeline call and return each one's PIL images, in order.
    `pipe` is the checkpoint's loaded img2img pipeline; text to image runs on
    the pipeline from_pipe builds from it (mode_pipeline), every step, at the
    jobs' width and height; ControlNet on the pipeline controlnet_pipeline
    builds with `controlnet` (the loaded network), guided by each item's map.
    `loras` are the jobs' (LoraSpec, weight) pairs (they share them: the
    batch key holds them), made active for this call alone (workers.loras).

    Every image has its own CPU generator (a job's seed, seed+1, ...), so the
    same seed, parameters, checkpoint and device give the same pixels whether
    the job ran alone or beside others (up to the float rounding of batched
    kernels). Each item's `on_step` gets (step, total) after every denoising
    step; returning False takes that item out: its result is None and its
    previews stop (its rows still compute until the call ends: multistep
    schedulers keep per-row history, so rows cannot be dropped mid-run).
    When every item is out the run stops and raises Canceled. `on_preview`
    gets, every few steps, a callable that makes a small approximate picture.
    """
    import torch
    from PIL import Image

    if not items:
        return []
    from workers.prompts import prompt_embeddings, prompt_shape

    shapes = [prompt_shape(pipe, spec.family, item.params.prompt, item.params.negative_prompt) for item in items]
    if len(set(shapes)) > 1:
        return _run_by_shape(pipe, spec, items, shapes, controlnet=controlnet, loras=loras)
    first = items[0].params
    if any(item.params.batch_key != first.batch_key for item in items):
        raise BadInput("jobs of one batch must share size, steps, strength and guidance")
    # Both passes' steps, with a hires pass.
    total = first.total_steps
    if first.denoising_steps < 1:
        raise BadInput(f"steps x strength must be at least 1 (got {first.steps} x {first.strength})")
    if first.width % 8 or first.height % 8:
        raise BadInput("width and height must be multiples of 8")
    family = FAMILIES[spec.family]
    inpaint = first.mode == Mode.INPAINT
    control = first.mode == Mode.CONTROLNET
    # ControlNet from the prompt alone runs like text to image.
    text = first.mode == Mode.TXT2IMG or (control and items[0].image is None)
    if control:
        if controlnet is None or any(item.control is None for item in items):
            raise BadInput("a ControlNet job needs its network and its map")
        runner = controlnet_pipeline(pipe, spec, controlnet, from_picture=not text)
    else:
        runner = mode_pipeline(pipe, spec, first.mode)
    prompts, negatives, sources, masks, maps, generators, rows = [], [], [], [], [], [], []
    for item in items:
        params = item.params
        if text:
            source = None
        elif item.image is None:
            raise BadInput("an image to image job needs its input picture")
        else:
            source = item.image.convert("RGB").resize((params.width, params.height), Image.Resampling.LANCZOS)
        mask = _soft_mask(item, params) if inpaint else None
        rows.append(range(len(prompts), len(prompts) + params.num_images))
        for index in range(params.num_images):
            prompts.append(params.prompt)
            negatives.append(params.negative_prompt)
            sources.append(source)
            masks.append(mask)
            maps.append(item.control)
            generators.append(torch.Generator(device="cpu").manual_seed(params.seed + index))
    # A compiled pipeline runs the batch sizes it was warmed up for: extra
    # rows repeat the last image (same seed) and are thrown away.
    from workers.accel import compiled_if_warm, padded_size

    guidance = 0.0 if family.turbo else first.guidance_scale
    shape = {"guidance_scale": guidance, "width": first.width, "height": first.height}
    # ControlNet runs eagerly (compiled_if_warm below): no padding.
    for _ in range(0 if control else padded_size(pipe, len(prompts), **shape) - len(prompts)):
        prompts.append(prompts[-1])
        negatives.append(negatives[-1])
        sources.append(sources[-1])
        masks.append(masks[-1])
        maps.append(maps[-1])
        generators.append(torch.Generator(device="cpu").manual_seed(generators[-1].initial_seed()))
    active = [True] * len(items)
    use_sampler(runner, pipe, spec, first.scheduler, seeds=[g.initial_seed() for g in generators])
    from workers.loras import holds_loras, use_loras

    use_loras(pipe, list(loras))

    # Weighted or long prompts as embeddings (workers.prompts), after the
    # LoRAs are set: they may change the text encoders.
    if shapes[0][0] == "embeddings":
        words = prompt_embeddings(pipe, spec.family, prompts, negatives, chunks=shapes[0][1])
        if FAMILIES[spec.family].architecture == "sdxl" and (family.turbo or not any(negatives)):
            # As SDXL runs "no negative prompt": zeros, not the empty text's embedding.
            del words["negative_prompt_embeds"], words["negative_pooled_prompt_embeds"]
    else:
        words = {"prompt": prompts, "negative_prompt": None if family.turbo or not any(negatives) else negatives}

    delay = settings.WORKER_STEP_DELAY_MS / 1000
    # Steps of earlier passes (the hires pass counts on from the first's), and
    # this pass's denoising steps.
    done_before, this_pass = [0], [first.denoising_steps]

    def callback(pipeline, step: int, timestep, kwargs: dict) -> dict:
        if delay:
            time.sleep(delay)  # the step-delay drill (settings.WORKER_STEP_DELAY_MS)
        # A second-order sampler (DPM++ SDE) calls back twice a step: its
        # calls are counted as the denoising steps they make.
        calls = getattr(pipeline, "_num_timesteps", None) or this_pass[0]
        step = done_before[0] + max(1, round((step + 1) * this_pass[0] / max(calls, 1))) - 1
        for index, item in enumerate(items):
            if not active[index]:
                continue
            if item.on_step is not None and item.on_step(step + 1, total) is False:
                active[index] = False
            elif item.on_preview is not None and (step + 1) % PREVIEW_EVERY == 0 and step + 1 < total:
                latents = kwargs.get("latents")
                if latents is not None:
                    # A copy of this item's first row (the next step replaces
                    # the latents), made into a picture when the receiver likes.
                    start = rows[index].start
                    own = latents[start : start + 1].detach().clone()
                    item.on_preview(functools.partial(latents_preview, own, family.architecture))
        if not any(active):
            pipeline._interrupt = True
        return kwargs

    # Text to image sizes its latents from width and height; image to image
    # from its (resized) inputs and the strength.
    # Inpainting adds its masks and its size (the inpaint pipelines default
    # to the model's native size, not the picture's).
    inputs = {"height": first.height, "width": first.width} if text else {"image": sources, "strength": first.strength}
    if inpaint:
        inputs.update(mask_image=masks, height=first.height, width=first.width)
    if control:
        # The map is `image` from the prompt alone, `control_image` beside a picture.
        inputs.update(
            {"image" if text else "control_image": maps},
            controlnet_conditioning_scale=first.conditioning_scale,
            control_guidance_start=first.control_start,
            control_guidance_end=first.control_end,
        )
    try:
        # The speed-ups' state (warm shapes, the compiled UNet) lives on the
        # loaded pipeline; the text-to-image one shares its UNet.
        # A UNet compiled before LoRA layers were added runs eagerly (the
        # graph has no place for them: hot-swapping them is GPU work to come).
        eager = control or holds_loras(pipe)
        with torch.inference_mode(), compiled_if_warm(pipe, len(prompts), eager=eager, **shape):
            result = runner(
                **words,
                **inputs,
                num_inference_steps=first.steps,
                guidance_scale=guidance,
                num_images_per_prompt=1,
                generator=generators,
                callback_on_step_end=callback,
                output_type="pil",
            )
        if first.has_hires and any(active):
            done_before[0], this_pass[0] = first.denoising_steps, first.hires_steps
            images = _hires_pass(pipe, spec, first, result.images, words, guidance, generators, callback)
        else:
            images = result.images
    except Exception as exc:
        raise classify(exc) from exc
    if not any(active):
        raise Canceled()
    if inpaint:
        # The VAE's round trip changes every pixel a little: the picture is
        # pasted back wherever the (soft) mask is not fully white, so a pixel
        # the mask leaves black is exactly the input's.
        images = [Image.composite(made, sources[row], masks[row]) for row, made in enumerate(images[: len(sources)])]
    return [images[row.start : row.stop] if active[index] else None for index, row in enumerate(rows)]


def _hires_pass(
    pipe, spec: CheckpointSpec, first: JobParams, images: list, words: dict, guidance, generators, callback
):
    """A1111's hires fix: the first pass's pictures enlarged to the output
    size (Lanczos) and refined by an image to image pass on the loaded
    pipeline at hires_strength, with the same prompts, sampler and LoRAs,
    each row's generator seeded again as for the first pass."""
    import torch
    from PIL import Image

    from workers.accel import compiled_if_warm

    width, height = first.output_size
    enlarged = [image.resize((width, height), Image.Resampling.LANCZOS) for image in images]
    seeds = [generator.initial_seed() for generator in generators]
    use_sampler(pipe, pipe, spec, first.scheduler, seeds=seeds)
    with (
        torch.inference_mode(),
        compiled_if_warm(pipe, len(enlarged), guidance_scale=guidance, width=width, height=height),
    ):
        return pipe(
            **words,
            image=enlarged,
            strength=first.hires_strength,
            num_inference_steps=first.steps,
            guidance_scale=guidance,
            num_images_per_prompt=1,
            generator=[torch.Generator(device="cpu").manual_seed(seed) for seed in seeds],
            callback_on_step_end=callback,
            output_type="pil",
        ).images


def _run_by_shape(pipe, spec: CheckpointSpec, items: list[BatchItem], shapes: list, **options) -> list[list | None]:
    """Jobs whose prompts have different shapes (workers.prompts) run in one
    call per shape, so padding never changes a job's pixels. Raises Canceled
    only when every job was canceled."""
    results: list = [None] * len(items)
    for shape in dict.fromkeys(shapes):
        picked = [index for index, own in enumerate(shapes) if own == shape]
        try:
            made = run_batch(pipe, spec, [items[index] for index in picked], **options)
        except Canceled:
            made = [None] * len(picked)
        for index, images in zip(picked, made, strict=True):
            results[index] = images
    if all(images is None for images in results):
        raise Canceled()
    return results


def _soft_mask(item: BatchItem, params: JobParams):
    """An inpainting job's mask at its output size, its edge softened by a
    Gaussian blur of mask_blur pixels (Pillow's ImageFilter)."""
    from PIL import Image, ImageFilter

    if item.mask is None or item.image is None:
        raise BadInput("an inpainting job needs its picture and its mask")
    mask = item.mask.convert("L").resize((params.width, params.height), Image.Resampling.LANCZOS)
    if params.mask_blur:
        mask = mask.filter(ImageFilter.GaussianBlur(params.mask_blur))
    return mask
