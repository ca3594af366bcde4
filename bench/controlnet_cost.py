"""What a ControlNet adds to a denoising step: the compute behind the
ControlNet entries' cost_factor (generation/pricing.py).

A ControlNet is a copy of its UNet's encoder and middle block that runs
beside the UNet at every step it guides; its residuals feed the UNet's skip
connections. This counts the floating-point operations of one step (a batch
of 2: classifier-free guidance) of the full-size SD 1.5 and SDXL UNets alone
and with their ControlNet (diffusers' ControlNetModel.from_unet), on the meta
device (shapes only: exact counts, no memory, no weights), and times the SD
1.5 step on this machine's CPU as a cross-check of the ratio.

    python bench/controlnet_cost.py            # FLOPs for both, and the CPU timing
    python bench/controlnet_cost.py --no-time  # FLOPs only (seconds)

Needs torch and diffusers only (no Django), like bench/gpu_speed.py, whose
pipeline builder it uses.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.gpu_speed import build

# family: (latent side at its native size, text width, SDXL's pooled width)
SHAPES = {"sd15": (64, 768, None), "sdxl": (128, 2048, 1280)}


def step_inputs(family: str, *, device: str, dtype, side: int | None = None):
    latent, text, pooled = SHAPES[family]
    side = side or latent
    with torch.device(device):
        inputs = {
            "sample": torch.randn(2, 4, side, side, dtype=dtype),
            "timestep": torch.tensor(500),
            "encoder_hidden_states": torch.randn(2, 77, text, dtype=dtype),
        }
        if pooled:
            inputs["added_cond_kwargs"] = {
                "text_embeds": torch.randn(2, pooled, dtype=dtype),
                "time_ids": torch.randn(2, 6, dtype=dtype),
            }
        control = torch.randn(2, 3, side * 8, side * 8, dtype=dtype)
    return inputs, control


def one_step(unet, controlnet, inputs, control):
    """A step as diffusers' ControlNet pipelines run it (controlnet None: plain)."""
    if controlnet is None:
        return unet(**inputs).sample
    down, mid = controlnet(**inputs, controlnet_cond=control, conditioning_scale=1.0, return_dict=False)
    return unet(**inputs, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample


def flops(family: str) -> tuple[int, int]:
    from diffusers import ControlNetModel

    pipe = build(family, device="meta", dtype=torch.float32, tiny=False)
    with torch.device("meta"):
        controlnet = ControlNetModel.from_unet(pipe.unet, load_weights_from_unet=False)
    inputs, control = step_inputs(family, device="meta", dtype=torch.float32)
    counts = []
    for network in (None, controlnet):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            one_step(pipe.unet, network, inputs, control)
        counts.append(counter.get_total_flops())
    return counts[0], counts[1]


def cpu_seconds(family: str, *, side: int, repeats: int) -> tuple[float, float]:
    from diffusers import ControlNetModel

    pipe = build(family, device="cpu", dtype=torch.float32, tiny=False)
    controlnet = ControlNetModel.from_unet(pipe.unet)
    inputs, control = step_inputs(family, device="cpu", dtype=torch.float32, side=side)
    medians = []
    for network in (None, controlnet):
        with torch.inference_mode():
            one_step(pipe.unet, network, inputs, control)  # warm
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                one_step(pipe.unet, network, inputs, control)
                times.append(time.perf_counter() - started)
        medians.append(statistics.median(times))
    return medians[0], medians[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-time", action="store_true", help="skip the CPU timing")
    parser.add_argument("--side", type=int, default=32, help="latent side of the CPU timing (32: 256 px)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}; one denoising step, batch 2 (classifier-free guidance)")
    for family in SHAPES:
        plain, guided = flops(family)
        side = SHAPES[family][0] * 8
        print(
            f"{family} at {side} px: UNet {plain / 1e12:.2f} TFLOP, with its ControlNet {guided / 1e12:.2f} TFLOP: "
            f"x{guided / plain:.2f}"
        )
    if not args.no_time:
        plain, guided = cpu_seconds("sd15", side=args.side, repeats=args.repeats)
        print(
            f"sd15 at {args.side * 8} px on this CPU ({torch.get_num_threads()} threads), median of {args.repeats}: "
            f"UNet {plain:.2f} s, with its ControlNet {guided:.2f} s: x{guided / plain:.2f}"
        )


if __name__ == "__main__":
    main()
