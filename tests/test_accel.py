"""The worker's speed-ups (workers/accel.py): which are chosen, and that the
ones the CPU can run keep the pixels. Their speed is measured on a GPU by
bench/gpu_speed.py, not here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from generation.params import JobParams
from workers.accel import Speedups
from workers.runtime import load_pipeline, run_img2img

SOURCE = Image.new("RGB", (96, 80), (200, 120, 40))
JOB = JobParams(
    prompt="a red fox",
    negative_prompt="",
    strength=0.6,
    steps=5,
    guidance_scale=7.0,
    seed=3,
    num_images=1,
    width=128,
    height=96,
)


def test_auto_means_every_speed_up_on_cuda_and_none_elsewhere():
    assert Speedups.parse("auto", device="cuda") == Speedups.all()
    assert Speedups.all().compile and Speedups.all().fused_qkv and Speedups.all().channels_last
    assert not Speedups.parse("auto", device="cpu")
    assert not Speedups.parse("none", device="cuda")
    assert Speedups.parse("sdpa, fused_qkv", device="cpu").names() == ["sdpa", "fused_qkv"]
    with pytest.raises(ValueError, match="turbo_mode"):
        Speedups.parse("sdpa,turbo_mode", device="cuda")


@pytest.mark.parametrize("slug", ["test-sd1", "test-sdxl"])
def test_the_eager_speed_ups_keep_the_pixels(test_checkpoints, settings, slug):
    spec = test_checkpoints[slug].spec
    vanilla, _ = load_pipeline(spec, device="cpu")
    settings.WORKER_SPEEDUPS = "sdpa,channels_last,fused_qkv"
    fast, _ = load_pipeline(spec, device="cpu")
    processors = {type(p).__name__ for p in fast.unet.attn_processors.values()}
    assert processors == {"FusedAttnProcessor2_0"}, processors
    assert fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    a = np.asarray(run_img2img(vanilla, spec, SOURCE, JOB)[0], dtype=np.int16)
    b = np.asarray(run_img2img(fast, spec, SOURCE, JOB)[0], dtype=np.int16)
    assert np.abs(a - b).max() <= 2 and np.abs(a - b).mean() < 0.05


def test_a_controlnet_call_runs_the_unet_eagerly_at_a_warm_shape():
    """At a shape warm_up compiled, the compiled UNet runs, except for a
    ControlNet call (eager=True): its residual inputs are not in the graph."""
    from types import SimpleNamespace

    from workers.accel import compiled_if_warm

    compiled = object()
    unet = SimpleNamespace(_compiled_call_impl=compiled, config=SimpleNamespace())
    pipe = SimpleNamespace(unet=unet, _accel_warm={(1, True, 64, 64)})
    shape = {"guidance_scale": 7.0, "width": 64, "height": 64}
    with compiled_if_warm(pipe, 1, **shape):
        assert pipe.unet._compiled_call_impl is compiled
    with compiled_if_warm(pipe, 1, eager=True, **shape):
        assert pipe.unet._compiled_call_impl is None
    assert pipe.unet._compiled_call_impl is compiled
