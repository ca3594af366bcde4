"""The seeded catalog and the catalog's write rules.

Seeding is idempotent and never overwrites what staff edited: a checkpoint
whose slug exists is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from generation.models import Checkpoint, Tag


@dataclass(frozen=True)
class Seed:
    slug: str
    name: str
    family: str
    source: str
    strength: float
    steps: int
    guidance: float
    price: int
    tags: tuple[str, ...]
    description: str
    max_side: int = 768
    max_steps: int = 50
    variant: str = ""
    sizes: list = field(default_factory=list)


# Real, well-known img2img-capable checkpoints. Prices scale with cost per
# image: SD 1.x/2.x at 512-768 px are cheap, SDXL at 1024 px about 3x, SD3
# and FLUX more; turbo models run 1-4 steps and cost the least.
SEEDS = [
    Seed(
        "sd15",
        "Stable Diffusion 1.5",
        "sd1",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        0.75,
        30,
        7.5,
        1,
        ("general",),
        "The classic all-rounder at 512 px.",
        variant="fp16",
    ),
    Seed(
        "dreamshaper-8",
        "DreamShaper 8",
        "sd1",
        "Lykon/dreamshaper-8",
        0.6,
        30,
        7.0,
        1,
        ("art", "fantasy"),
        "Painterly, versatile fine-tune of SD 1.5.",
        variant="fp16",
    ),
    Seed(
        "realistic-vision-5",
        "Realistic Vision 5.1",
        "sd1",
        "SG161222/Realistic_Vision_V5.1_noVAE",
        0.5,
        30,
        6.0,
        1,
        ("photoreal", "portrait"),
        "Photographic people and scenes.",
    ),
    Seed(
        "dreamlike-photoreal-2",
        "Dreamlike Photoreal 2.0",
        "sd1",
        "dreamlike-art/dreamlike-photoreal-2.0",
        0.6,
        30,
        7.0,
        1,
        ("photoreal",),
        "Photorealistic SD 1.5 fine-tune.",
    ),
    Seed(
        "openjourney-4",
        "Openjourney v4",
        "sd1",
        "prompthero/openjourney-v4",
        0.65,
        30,
        7.0,
        1,
        ("art",),
        "Midjourney-like illustration style.",
    ),
    Seed(
        "ghibli-diffusion",
        "Ghibli Diffusion",
        "sd1",
        "nitrosocke/Ghibli-Diffusion",
        0.6,
        30,
        7.0,
        1,
        ("anime", "art"),
        'Studio Ghibli look; add "ghibli style" to the prompt.',
    ),
    Seed(
        "counterfeit-2-5",
        "Counterfeit 2.5",
        "sd1",
        "gsdf/Counterfeit-V2.5",
        0.6,
        30,
        8.0,
        1,
        ("anime",),
        "Detailed anime illustration.",
    ),
    Seed(
        "sd21",
        "Stable Diffusion 2.1",
        "sd2",
        "stabilityai/stable-diffusion-2-1",
        0.7,
        30,
        7.5,
        1,
        ("general",),
        "768 px SD 2.x base.",
        variant="fp16",
    ),
    Seed(
        "sd-turbo",
        "SD-Turbo",
        "sd-turbo",
        "stabilityai/sd-turbo",
        0.5,
        2,
        0.0,
        1,
        ("fast",),
        "One-to-four-step distilled SD 2.1 at 512 px.",
        max_side=512,
        max_steps=4,
        variant="fp16",
    ),
    Seed(
        "sdxl-base",
        "SDXL 1.0",
        "sdxl",
        "stabilityai/stable-diffusion-xl-base-1.0",
        0.5,
        30,
        5.0,
        3,
        ("general", "photoreal"),
        "Stability's 1024 px base model.",
        max_side=1024,
        variant="fp16",
    ),
    Seed(
        "sdxl-refiner",
        "SDXL Refiner 1.0",
        "sdxl",
        "stabilityai/stable-diffusion-xl-refiner-1.0",
        0.3,
        30,
        5.0,
        2,
        ("detail",),
        "Adds fine detail to an image at low strength.",
        max_side=1024,
        variant="fp16",
    ),
    Seed(
        "sdxl-turbo",
        "SDXL-Turbo",
        "sdxl-turbo",
        "stabilityai/sdxl-turbo",
        0.5,
        2,
        0.0,
        1,
        ("fast",),
        "One-to-four-step distilled SDXL at 512 px.",
        max_side=512,
        max_steps=4,
        variant="fp16",
    ),
    Seed(
        "juggernaut-xl-9",
        "Juggernaut XL v9",
        "sdxl",
        "RunDiffusion/Juggernaut-XL-v9",
        0.5,
        30,
        5.0,
        3,
        ("photoreal", "cinematic"),
        "Cinematic photoreal SDXL fine-tune.",
        max_side=1024,
    ),
    Seed(
        "realvis-xl-4",
        "RealVisXL 4.0",
        "sdxl",
        "SG161222/RealVisXL_V4.0",
        0.5,
        30,
        5.0,
        3,
        ("photoreal", "portrait"),
        "Realistic people and places.",
        max_side=1024,
    ),
    Seed(
        "dreamshaper-xl",
        "DreamShaper XL",
        "sdxl",
        "Lykon/dreamshaper-xl-1-0",
        0.55,
        30,
        6.0,
        3,
        ("art", "fantasy"),
        "Versatile artistic SDXL.",
        max_side=1024,
    ),
    Seed(
        "animagine-xl-3-1",
        "Animagine XL 3.1",
        "sdxl",
        "cagliostrolab/animagine-xl-3.1",
        0.55,
        28,
        7.0,
        3,
        ("anime",),
        "High-quality anime SDXL.",
        max_side=1024,
    ),
    Seed(
        "sd3-medium",
        "Stable Diffusion 3 Medium",
        "sd3",
        "stabilityai/stable-diffusion-3-medium-diffusers",
        0.6,
        28,
        7.0,
        4,
        ("general", "typography"),
        "MMDiT model, good with text in images.",
        max_side=1024,
    ),
    Seed(
        "flux-schnell",
        "FLUX.1 [schnell]",
        "flux",
        "black-forest-labs/FLUX.1-schnell",
        0.6,
        4,
        0.0,
        4,
        ("fast", "photoreal"),
        "Fast 12B FLUX, 1-4 steps.",
        max_side=1024,
        max_steps=8,
    ),
    Seed(
        "flux-dev",
        "FLUX.1 [dev]",
        "flux",
        "black-forest-labs/FLUX.1-dev",
        0.6,
        28,
        3.5,
        8,
        ("photoreal", "art"),
        "Highest quality FLUX, guidance-distilled.",
        max_side=1024,
    ),
]

TAG_NAMES = {
    "general": "General",
    "photoreal": "Photoreal",
    "portrait": "Portrait",
    "art": "Art",
    "fantasy": "Fantasy",
    "anime": "Anime",
    "fast": "Fast",
    "detail": "Detail",
    "cinematic": "Cinematic",
    "typography": "Typography",
    "test": "Test (random weights)",
}


@transaction.atomic
def catalog_seed() -> list[Checkpoint]:
    """Create the seeded checkpoints that do not exist yet; return those created."""
    created = []
    for order, seed in enumerate(SEEDS):
        checkpoint = _create_once(
            seed.slug,
            seed.tags,
            name=seed.name,
            family=seed.family,
            source_kind="hub",
            source=seed.source,
            variant=seed.variant,
            description=seed.description,
            default_strength=seed.strength,
            default_steps=seed.steps,
            default_guidance=seed.guidance,
            max_side=seed.max_side,
            max_steps=seed.max_steps,
            allowed_sizes=seed.sizes,
            price_per_image=seed.price,
            sort_order=100 + order,
        )
        if checkpoint:
            created.append(checkpoint)
    return created


@transaction.atomic
def catalog_register_test_checkpoints(built) -> list[Checkpoint]:
    """Add (once) catalog entries for the random-weight test checkpoints."""
    created = []
    for order, item in enumerate(built):
        checkpoint = _create_once(
            item.slug,
            ("test",),
            name=item.name,
            family=item.family,
            source_kind="folder",
            source=item.folder,
            is_test=True,
            description=item.description + " Random weights: the output is noise.",
            default_strength=0.5 if item.turbo else 0.6,
            default_steps=2 if item.turbo else 20,
            default_guidance=0.0 if item.turbo else 7.0,
            max_side=1024,
            max_steps=4 if item.turbo else 50,
            price_per_image=1,
            sort_order=order,
        )
        if checkpoint:
            created.append(checkpoint)
    return created


def _create_once(slug: str, tags, **fields) -> Checkpoint | None:
    """Create the checkpoint with its tags unless the slug exists; staff
    edits to an existing row are kept."""
    checkpoint, created = Checkpoint.objects.get_or_create(slug=slug, defaults=fields)
    if not created:
        return None
    checkpoint.tags.set(_tags(tags))
    return checkpoint


def _tags(slugs) -> list[Tag]:
    return [
        Tag.objects.get_or_create(slug=slug, defaults={"name": TAG_NAMES.get(slug, slug.title())})[0] for slug in slugs
    ]
