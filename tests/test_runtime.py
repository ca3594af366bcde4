"""The diffusers runtime on the random-weight checkpoints: real classes, real
loading code, real img2img on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from PIL import Image

from generation.params import JobParams
from workers.errors import BadInput, Canceled, ErrorKind, MissingWeights, WorkerError, classify
from workers.runtime import load_pipeline, pick_device, run_img2img
from workers.spec import CheckpointSpec
from workers.testweights import RANDOM_CHECKPOINTS

SOURCE = Image.new("RGB", (96, 80), (200, 120, 40))


def params(**changes) -> JobParams:
    values = dict(
        prompt="a red fox, oil painting",
        strength=0.5,
        steps=4,
        guidance_scale=7.0,
        seed=42,
        width=128,
        height=128,
        num_images=1,
        negative_prompt="",
    )
    values.update(changes)
    return JobParams(**values)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# A dedicated inpainting checkpoint runs inpainting only (tests/test_inpaint.py).
@pytest.mark.parametrize("slug", [c.slug for c in RANDOM_CHECKPOINTS if not c.inpainting])
def test_every_family_loads_and_runs_img2img(pipes, slug):
    pipe, spec = pipes(slug)
    images = run_img2img(pipe, spec, SOURCE, params(num_images=2, width=136, height=96))
    assert len(images) == 2
    assert all(image.size == (136, 96) and image.mode == "RGB" for image in images)


def test_the_vae_downsamples_by_eight_like_the_real_one(pipes):
    pipe, spec = pipes("test-sd1")
    assert pipe.vae_scale_factor == 8
    image = run_img2img(pipe, spec, SOURCE, params(width=512, height=512, steps=2, strength=0.5))[0]
    assert image.size == (512, 512)


def test_the_same_seed_gives_the_same_pixels_and_another_seed_does_not(pipes):
    pipe, spec = pipes("test-sdxl")
    first = run_img2img(pipe, spec, SOURCE, params(seed=7))[0]
    again = run_img2img(pipe, spec, SOURCE, params(seed=7))[0]
    other = run_img2img(pipe, spec, SOURCE, params(seed=8))[0]
    assert np.array_equal(pixels(first), pixels(again))
    assert np.abs(pixels(first) - pixels(other)).mean() > 1.0


def test_each_image_of_a_batch_has_its_own_seed(pipes):
    pipe, spec = pipes("test-sd1")
    batch = run_img2img(pipe, spec, SOURCE, params(seed=100, num_images=2))
    alone = run_img2img(pipe, spec, SOURCE, params(seed=101, num_images=1))
    # Image 2 of a batch is image 1 of seed+1, up to float rounding that
    # differs between batched and single kernels.
    assert np.abs(pixels(batch[1]) - pixels(alone[0])).max() <= 2
    assert np.abs(pixels(batch[0]) - pixels(batch[1])).mean() > 1.0


@pytest.mark.parametrize(("steps", "strength"), [(10, 0.5), (7, 0.3), (4, 1.0)])
def test_img2img_runs_steps_times_strength_denoising_steps(pipes, steps, strength):
    pipe, spec = pipes("test-sd1")
    seen: list[tuple[int, int]] = []
    run_img2img(pipe, spec, SOURCE, params(steps=steps, strength=strength), on_step=lambda s, t: seen.append((s, t)))
    expected = int(steps * strength)
    assert seen == [(i, expected) for i in range(1, expected + 1)]


def test_a_turbo_model_runs_without_guidance_in_one_step(pipes):
    pipe, spec = pipes("test-sdxl-turbo")
    seen = []
    images = run_img2img(
        pipe, spec, SOURCE, params(steps=2, strength=0.5, guidance_scale=9), on_step=lambda s, t: seen.append(s)
    )
    assert seen == [1] and len(images) == 1
    assert pipe.do_classifier_free_guidance is False


def test_the_progress_callback_can_cancel_the_run(pipes):
    pipe, spec = pipes("test-sd1")
    seen = []

    def on_step(step: int, total: int) -> bool:
        seen.append(step)
        return step < 2

    with pytest.raises(Canceled):
        run_img2img(pipe, spec, SOURCE, params(steps=10, strength=0.8), on_step=on_step)
    assert seen == [1, 2]


@pytest.mark.parametrize(
    "bad",
    [dict(steps=1, strength=0.5), dict(width=100), dict(strength=1.5), dict(steps=0)],
    ids=["steps-x-strength-below-1", "size-not-multiple-of-8", "strength-above-1", "zero-steps"],
)
def test_bad_parameters_are_classified_as_bad_input(pipes, bad):
    pipe, spec = pipes("test-sd1")
    with pytest.raises(WorkerError) as info:
        run_img2img(pipe, spec, SOURCE, params(**bad))
    assert info.value.kind == ErrorKind.BAD_INPUT


def test_missing_weights_are_classified(test_checkpoints):
    with pytest.raises(MissingWeights):
        load_pipeline(CheckpointSpec("x", "sd1", "folder", "no/such/folder"), device="cpu")
    with pytest.raises(MissingWeights):  # a hub repo that is not on this machine: no download is tried
        load_pipeline(CheckpointSpec("y", "sdxl", "hub", "stabilityai/sdxl-turbo"), device="cpu")
    broken = Path(settings.MODELS_DIR) / "test" / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "model_index.json").write_text(
        (Path(settings.MODELS_DIR) / test_checkpoints["test-sd1"].folder / "model_index.json").read_text()
    )
    with pytest.raises(MissingWeights):
        load_pipeline(CheckpointSpec("z", "sd1", "folder", "test/broken"), device="cpu")


def test_an_unknown_family_is_bad_input():
    with pytest.raises(BadInput):
        load_pipeline(CheckpointSpec("x", "imagen", "folder", "test/sd1"), device="cpu")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), ErrorKind.OUT_OF_MEMORY),
        (FileNotFoundError("unet/diffusion_pytorch_model.safetensors"), ErrorKind.MISSING_WEIGHTS),
        (ValueError("`strength` should in [0.0, 1.0]"), ErrorKind.BAD_INPUT),
        (ConnectionError("redis went away"), ErrorKind.TRANSIENT),
    ],
)
def test_errors_are_classified(exc, kind):
    error = classify(exc)
    assert error.kind == kind
    assert error.retryable == (kind in (ErrorKind.OUT_OF_MEMORY, ErrorKind.TRANSIENT))


def test_the_device_is_the_cpu_here_with_full_precision(monkeypatch):
    import torch

    from workers.runtime import pick_dtype

    assert pick_device() == "cpu"
    spec = CheckpointSpec("x", "sdxl", "folder", "test/sdxl", dtype="float16")
    assert pick_dtype(spec, "cpu") == torch.float32
    assert pick_dtype(spec, "cuda") == torch.float16
    assert pick_dtype(CheckpointSpec("f", "flux", "hub", "a/b"), "cuda") == torch.bfloat16
    monkeypatch.setenv("WORKER_DEVICE", "mps")
    assert pick_device() == "mps"


def test_attention_runs_through_pytorch_sdpa(pipes):
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe, _ = pipes("test-sdxl")
    processors = pipe.unet.attn_processors.values()
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)
