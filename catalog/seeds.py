"""The seeded catalog and the catalog's write rules.

Seeding is idempotent and never overwrites what staff edited: a checkpoint
whose slug exists is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from catalog.models import Checkpoint, ControlNet, Lora, Tag


@dataclass(frozen=True, kw_only=True)
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
    # False for a checkpoint that only refines an input (image to image only).
    text_to_image: bool = True


# Real, well-known img2img-capable checkpoints. Prices scale with cost per
# image: SD 1.x/2.x at 512-768 px are cheap, SDXL at 1024 px about 3x, SD3
# and FLUX more; turbo models run 1-4 steps and cost the least.
SEEDS = [
    Seed(
        slug="sd15",
        name="Stable Diffusion 1.5",
        family="sd1",
        source="stable-diffusion-v1-5/stable-diffusion-v1-5",
        strength=0.75,
        steps=30,
        guidance=7.5,
        price=1,
        tags=("general",),
        description="The classic all-rounder at 512 px.",
        variant="fp16",
    ),
    Seed(
        slug="dreamshaper-8",
        name="DreamShaper 8",
        family="sd1",
        source="Lykon/dreamshaper-8",
        strength=0.6,
        steps=30,
        guidance=7.0,
        price=1,
        tags=("art", "fantasy"),
        description="Painterly, versatile fine-tune of SD 1.5.",
        variant="fp16",
    ),
    Seed(
        slug="realistic-vision-5",
        name="Realistic Vision 5.1",
        family="sd1",
        source="SG161222/Realistic_Vision_V5.1_noVAE",
        strength=0.5,
        steps=30,
        guidance=6.0,
        price=1,
        tags=("photoreal", "portrait"),
        description="Photographic people and scenes.",
    ),
    Seed(
        slug="dreamlike-photoreal-2",
        name="Dreamlike Photoreal 2.0",
        family="sd1",
        source="dreamlike-art/dreamlike-photoreal-2.0",
        strength=0.6,
        steps=30,
        guidance=7.0,
        price=1,
        tags=("photoreal",),
        description="Photorealistic SD 1.5 fine-tune.",
    ),
    Seed(
        slug="openjourney-4",
        name="Openjourney v4",
        family="sd1",
        source="prompthero/openjourney-v4",
        strength=0.65,
        steps=30,
        guidance=7.0,
        price=1,
        tags=("art",),
        description="Midjourney-like illustration style.",
    ),
    Seed(
        slug="ghibli-diffusion",
        name="Ghibli Diffusion",
        family="sd1",
        source="nitrosocke/Ghibli-Diffusion",
        strength=0.6,
        steps=30,
        guidance=7.0,
        price=1,
        tags=("anime", "art"),
        description='Studio Ghibli look; add "ghibli style" to the prompt.',
    ),
    Seed(
        slug="counterfeit-2-5",
        name="Counterfeit 2.5",
        family="sd1",
        source="gsdf/Counterfeit-V2.5",
        strength=0.6,
        steps=30,
        guidance=8.0,
        price=1,
        tags=("anime",),
        description="Detailed anime illustration.",
    ),
    Seed(
        slug="sd21",
        name="Stable Diffusion 2.1",
        family="sd2",
        source="stabilityai/stable-diffusion-2-1",
        strength=0.7,
        steps=30,
        guidance=7.5,
        price=1,
        tags=("general",),
        description="768 px SD 2.x base.",
        variant="fp16",
    ),
    Seed(
        slug="sd-turbo",
        name="SD-Turbo",
        family="sd-turbo",
        source="stabilityai/sd-turbo",
        strength=0.5,
        steps=2,
        guidance=0.0,
        price=1,
        tags=("fast",),
        description="One-to-four-step distilled SD 2.1 at 512 px.",
        max_side=512,
        max_steps=4,
        variant="fp16",
    ),
    Seed(
        slug="sdxl-base",
        name="SDXL 1.0",
        family="sdxl",
        source="stabilityai/stable-diffusion-xl-base-1.0",
        strength=0.5,
        steps=30,
        guidance=5.0,
        price=3,
        tags=("general", "photoreal"),
        description="Stability's 1024 px base model.",
        max_side=1024,
        variant="fp16",
    ),
    Seed(
        slug="sdxl-refiner",
        name="SDXL Refiner 1.0",
        family="sdxl",
        source="stabilityai/stable-diffusion-xl-refiner-1.0",
        strength=0.3,
        steps=30,
        guidance=5.0,
        price=2,
        tags=("detail",),
        description="Adds fine detail to an image at low strength.",
        max_side=1024,
        variant="fp16",
        # Trained on the low-noise end of the schedule only: from pure noise
        # it makes no picture.
        text_to_image=False,
    ),
    Seed(
        slug="sdxl-turbo",
        name="SDXL-Turbo",
        family="sdxl-turbo",
        source="stabilityai/sdxl-turbo",
        strength=0.5,
        steps=2,
        guidance=0.0,
        price=1,
        tags=("fast",),
        description="One-to-four-step distilled SDXL at 512 px.",
        max_side=512,
        max_steps=4,
        variant="fp16",
    ),
    Seed(
        slug="juggernaut-xl-9",
        name="Juggernaut XL v9",
        family="sdxl",
        source="RunDiffusion/Juggernaut-XL-v9",
        strength=0.5,
        steps=30,
        guidance=5.0,
        price=3,
        tags=("photoreal", "cinematic"),
        description="Cinematic photoreal SDXL fine-tune.",
        max_side=1024,
    ),
    Seed(
        slug="realvis-xl-4",
        name="RealVisXL 4.0",
        family="sdxl",
        source="SG161222/RealVisXL_V4.0",
        strength=0.5,
        steps=30,
        guidance=5.0,
        price=3,
        tags=("photoreal", "portrait"),
        description="Realistic people and places.",
        max_side=1024,
    ),
    Seed(
        slug="dreamshaper-xl",
        name="DreamShaper XL",
        family="sdxl",
        source="Lykon/dreamshaper-xl-1-0",
        strength=0.55,
        steps=30,
        guidance=6.0,
        price=3,
        tags=("art", "fantasy"),
        description="Versatile artistic SDXL.",
        max_side=1024,
    ),
    Seed(
        slug="animagine-xl-3-1",
        name="Animagine XL 3.1",
        family="sdxl",
        source="cagliostrolab/animagine-xl-3.1",
        strength=0.55,
        steps=28,
        guidance=7.0,
        price=3,
        tags=("anime",),
        description="High-quality anime SDXL.",
        max_side=1024,
    ),
    Seed(
        slug="sd3-medium",
        name="Stable Diffusion 3 Medium",
        family="sd3",
        source="stabilityai/stable-diffusion-3-medium-diffusers",
        strength=0.6,
        steps=28,
        guidance=7.0,
        price=4,
        tags=("general", "typography"),
        description="MMDiT model, good with text in images.",
        max_side=1024,
    ),
    Seed(
        slug="flux-schnell",
        name="FLUX.1 [schnell]",
        family="flux",
        source="black-forest-labs/FLUX.1-schnell",
        strength=0.6,
        steps=4,
        guidance=0.0,
        price=4,
        tags=("fast", "photoreal"),
        description="Fast 12B FLUX, 1-4 steps.",
        max_side=1024,
        max_steps=8,
    ),
    Seed(
        slug="flux-dev",
        name="FLUX.1 [dev]",
        family="flux",
        source="black-forest-labs/FLUX.1-dev",
        strength=0.6,
        steps=28,
        guidance=3.5,
        price=8,
        tags=("photoreal", "art"),
        description="Highest quality FLUX, guidance-distilled.",
        max_side=1024,
    ),
]


@dataclass(frozen=True, kw_only=True)
class ControlSeed:
    slug: str
    name: str
    family: str
    kind: str
    source: str
    description: str
    # Its network's work per step against the UNet's, measured by
    # bench/controlnet_cost.py: x1.35 for SD 1.5, x1.45 for SDXL.
    cost_factor: float = 1.35
    variant: str = ""


# Real ControlNets: lllyasviel's v1.1 set for SD 1.5, diffusers' for SDXL.
CONTROL_SEEDS = [
    ControlSeed(
        slug="sd15-canny",
        name="Canny edges (SD 1.5)",
        family="sd1",
        kind="canny",
        source="lllyasviel/control_v11p_sd15_canny",
        description="Keeps the outlines of the control picture's edges.",
    ),
    ControlSeed(
        slug="sd15-scribble",
        name="Scribble (SD 1.5)",
        family="sd1",
        kind="scribble",
        source="lllyasviel/control_v11p_sd15_scribble",
        description="Turns a rough drawing into a picture.",
    ),
    ControlSeed(
        slug="sd15-depth",
        name="Depth (SD 1.5)",
        family="sd1",
        kind="depth",
        source="lllyasviel/control_v11f1p_sd15_depth",
        description="Keeps the control picture's depth: near and far stay where they are.",
    ),
    ControlSeed(
        slug="sd15-openpose",
        name="Pose (SD 1.5)",
        family="sd1",
        kind="openpose",
        source="lllyasviel/control_v11p_sd15_openpose",
        description="Keeps people's poses (send an OpenPose skeleton with preprocess none).",
    ),
    ControlSeed(
        slug="sd15-lineart",
        name="Line art (SD 1.5)",
        family="sd1",
        kind="lineart",
        source="lllyasviel/control_v11p_sd15_lineart",
        description="Colours line art (send the lines, white on black, with preprocess none).",
    ),
    ControlSeed(
        slug="sdxl-canny",
        name="Canny edges (SDXL)",
        family="sdxl",
        kind="canny",
        source="diffusers/controlnet-canny-sdxl-1.0",
        description="Keeps the outlines of the control picture's edges.",
        cost_factor=1.45,
        variant="fp16",
    ),
    ControlSeed(
        slug="sdxl-depth",
        name="Depth (SDXL)",
        family="sdxl",
        kind="depth",
        source="diffusers/controlnet-depth-sdxl-1.0",
        description="Keeps the control picture's depth.",
        cost_factor=1.45,
        variant="fp16",
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
            text_to_image=seed.text_to_image,
            price_per_image=seed.price,
            sort_order=100 + order,
        )
        if checkpoint:
            created.append(checkpoint)
    return created


@transaction.atomic
def catalog_seed_controlnets() -> list[ControlNet]:
    """Create the seeded ControlNets that do not exist yet (staff edits are kept)."""
    return _controlnets_once(
        {
            "slug": seed.slug,
            "name": seed.name,
            "family": seed.family,
            "kind": seed.kind,
            "source_kind": "hub",
            "source": seed.source,
            "variant": seed.variant,
            "description": seed.description,
            "cost_factor": seed.cost_factor,
            "sort_order": 100 + order,
        }
        for order, seed in enumerate(CONTROL_SEEDS)
    )


@transaction.atomic
def catalog_register_test_controlnets(built) -> list[ControlNet]:
    """Add (once) catalog entries for the random-weight test ControlNets."""
    return _controlnets_once(
        {
            "slug": item.slug,
            "name": item.name,
            "family": item.family,
            "kind": item.kind,
            "source_kind": "folder",
            "source": item.folder,
            "is_test": True,
            "description": "Random weights: the output is noise.",
            "sort_order": order,
        }
        for order, item in enumerate(built)
    )


@transaction.atomic
def catalog_register_test_loras(built) -> list[Lora]:
    """Add (once) catalog entries for the random-weight test LoRAs."""
    created = []
    for order, item in enumerate(built):
        lora, made = Lora.objects.get_or_create(
            slug=item.slug,
            defaults={
                "name": item.name,
                "family": item.family,
                "source": item.file,
                "trigger_words": item.trigger_words,
                "is_test": True,
                "description": f"Random weights in {item.layout}'s layout: the output is noise.",
                "sort_order": order,
            },
        )
        if made:
            lora.tags.set(_tags(["test"]))
            created.append(lora)
    return created


def _controlnets_once(entries) -> list[ControlNet]:
    """Create each ControlNet unless its slug exists (staff edits to an
    existing row are kept); return those created."""
    created = []
    for fields in entries:
        control, made = ControlNet.objects.get_or_create(slug=fields.pop("slug"), defaults=fields)
        if made:
            created.append(control)
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
            inpainting=item.inpainting,
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
