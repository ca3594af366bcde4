"""A cheap preview of a run in progress: the latents mapped to RGB by a fixed
linear approximation (no VAE decode, no extra model)."""

from __future__ import annotations

import base64
import io

# Per latent channel, its contribution to R, G, B (widely used approximations
# for the SD 1.x/2.x and SDXL latent spaces).
_FACTORS = {
    "sd": [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]],
    "sdxl": [
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.2188],
    ],
}
PREVIEW_SIDE = 256


def latents_preview(latents, architecture: str):
    """The first image's latents as a small PIL image, or None when the
    latent space has no known mapping (SD3, FLUX: 16 channels)."""
    import torch
    from PIL import Image

    factors = _FACTORS.get("sdxl" if architecture == "sdxl" else "sd")
    if latents is None or latents.ndim != 4 or latents.shape[1] != len(factors):
        return None
    matrix = torch.tensor(factors, dtype=torch.float32)
    rgb = latents[0].float().cpu().permute(1, 2, 0) @ matrix
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(pixels, "RGB")
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return image


def data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
