"""The catalog: what can be run. Diffusion checkpoints (their pipeline
family, where their weights come from, defaults, limits and price),
ControlNets and LoRAs that fit them, the tags that group them, and staff
test loads. Whether an entry is *available* is not stored: it comes from
live worker heartbeats (catalog.availability).
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from catalog.controls import Preprocess
from catalog.families import FAMILIES, FAMILY_CHOICES, SOURCE_KINDS, parse_source
from catalog.limits import MAX_GUIDANCE, MAX_SIDE, MAX_STEPS, MIN_SIDE, SIZE_MULTIPLE
from catalog.modes import Mode
from catalog.samplers import sampler_names


class Tag(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=40)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


# ControlNet runs on these architectures (diffusers' ControlNet pipelines).
CONTROLNET_ARCHITECTURES = ("sd1", "sdxl")


class Checkpoint(models.Model):
    class Dtype(models.TextChoices):
        AUTO = "auto", "Auto (fp16/bf16 on GPU, fp32 on CPU)"
        FLOAT16 = "float16", "float16"
        BFLOAT16 = "bfloat16", "bfloat16"
        FLOAT32 = "float32", "float32"

    slug = models.SlugField(max_length=80, unique=True, help_text="Stable id used by the API and the job queue.")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    family = models.CharField(max_length=20, choices=FAMILY_CHOICES)
    source_kind = models.CharField(max_length=20, choices=SOURCE_KINDS, default="hub")
    source = models.CharField(
        max_length=500,
        help_text="Hugging Face repo id (org/name), a diffusers folder, or a .safetensors file. "
        "Relative paths are under MODELS_DIR.",
    )
    revision = models.CharField(max_length=100, blank=True, help_text="Hub revision (branch, tag or commit).")
    variant = models.CharField(max_length=20, blank=True, help_text='Weight variant, e.g. "fp16".')
    dtype = models.CharField(max_length=10, choices=Dtype.choices, default=Dtype.AUTO)
    is_test = models.BooleanField(
        default=False, help_text="Random weights built locally for tests and the offline demo: output is noise."
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="checkpoints")

    default_strength = models.FloatField(validators=[MinValueValidator(0.01), MaxValueValidator(1.0)])
    default_steps = models.PositiveSmallIntegerField(validators=[MinValueValidator(1)])
    default_guidance = models.FloatField(validators=[MinValueValidator(0.0), MaxValueValidator(MAX_GUIDANCE)])
    max_side = models.PositiveSmallIntegerField(
        default=1024,
        validators=[MinValueValidator(MIN_SIDE), MaxValueValidator(MAX_SIDE)],
        help_text="Largest output width or height, pixels.",
    )
    max_steps = models.PositiveSmallIntegerField(default=50, validators=[MaxValueValidator(MAX_STEPS)])
    allowed_sizes = models.JSONField(
        default=list,
        blank=True,
        help_text="Output sizes offered, as [[width, height], ...]; empty: any multiple of 8 up to max side.",
    )
    text_to_image = models.BooleanField(
        default=True,
        help_text="Makes pictures from a prompt alone (text to image). Off for checkpoints that only refine "
        "an input picture, like the SDXL refiner: they offer image to image only.",
    )
    inpainting = models.BooleanField(
        default=False,
        help_text="A dedicated inpainting checkpoint (a 9-channel UNet: latents, mask, masked picture): it offers "
        "inpainting and outpainting only.",
    )
    default_scheduler = models.CharField(
        max_length=24,
        blank=True,
        help_text="The sampler a job runs with unless it names one (catalog/samplers.py lists each family's); "
        "blank: the family's default.",
    )
    price_per_image = models.PositiveIntegerField(
        help_text="Credits for one image of up to one megapixel at the default steps and strength "
        "(generation/pricing.py scales it by size, steps run and count)."
    )

    enabled = models.BooleanField(default=True)
    sort_order = models.IntegerField(default=100)
    preview = models.ImageField(upload_to="previews/", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sort_order", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(default_steps__lte=models.F("max_steps")), name="checkpoint_default_steps_within_max"
            ),
            models.CheckConstraint(
                condition=Q(default_strength__gt=0) & Q(default_strength__lte=1), name="checkpoint_strength_range"
            ),
            models.CheckConstraint(condition=Q(price_per_image__gte=1), name="checkpoint_price_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def modes(self) -> list[Mode]:
        """The modes its jobs may have (catalog.modes): image to image
        always; text to image and inpainting unless it only refines (a
        refiner is trained on the last steps of a picture, not to fill a
        masked area from noise); a dedicated inpainting checkpoint, inpainting only;
        ControlNet where its architecture has ControlNets (CONTROLNET_ARCHITECTURES)."""
        if self.inpainting:
            return [Mode.INPAINT]
        if not self.text_to_image:
            return [Mode.IMG2IMG]
        modes = [Mode.IMG2IMG, Mode.TXT2IMG, Mode.INPAINT]
        if FAMILIES[self.family].architecture in CONTROLNET_ARCHITECTURES:
            modes.append(Mode.CONTROLNET)
        return modes

    @property
    def schedulers(self) -> tuple[str, ...]:
        """The samplers its jobs may name (its family's)."""
        return sampler_names(self.family)

    @property
    def scheduler_default(self) -> str:
        """The sampler a job runs with when it names none."""
        names = self.schedulers
        if self.default_scheduler in names:
            return self.default_scheduler
        return names[0] if names else ""

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.default_scheduler and self.family and self.default_scheduler not in self.schedulers:
            errors["default_scheduler"] = "This family offers " + ", ".join(self.schedulers) + "."
        if self.default_steps and self.max_steps and self.default_steps > self.max_steps:
            errors["default_steps"] = f"Default steps ({self.default_steps}) exceed max steps ({self.max_steps})."
        if self.max_side and self.max_side % SIZE_MULTIPLE:
            errors["max_side"] = f"Max side must be a multiple of {SIZE_MULTIPLE}."
        try:
            parse_source(self.source_kind, self.source)
        except ValueError as exc:
            errors["source"] = str(exc)
        sizes_error = _check_sizes(self.allowed_sizes, self.max_side)
        if sizes_error:
            errors["allowed_sizes"] = sizes_error
        if errors:
            raise ValidationError(errors)


def _check_sizes(sizes, max_side: int | None) -> str | None:
    if not isinstance(sizes, list):
        return "Give a list of [width, height] pairs."
    for pair in sizes:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) for v in pair)):
            return f"{pair!r} is not a [width, height] pair of integers."
        if any(v < MIN_SIDE or v % SIZE_MULTIPLE for v in pair):
            return f"{pair!r}: sides must be multiples of {SIZE_MULTIPLE}, at least {MIN_SIDE}."
        if max_side and max(pair) > max_side:
            return f"{pair!r} is larger than the max side {max_side}."
    return None


class ControlNet(models.Model):
    """A ControlNet the catalog offers: a network, tied to one family, that
    keeps a picture's structure (edges, a scribble, depth, a pose, line art)
    while the prompt changes everything else. Staff manage these like
    checkpoints; whether a live worker has its weights comes from the
    workers' heartbeats (catalog.availability)."""

    slug = models.SlugField(max_length=80, unique=True, help_text="Stable id used by the API (`control`).")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    family = models.CharField(
        max_length=20,
        choices=FAMILY_CHOICES,
        help_text="The family it was trained on; it fits every checkpoint of that family's architecture.",
    )
    kind = models.CharField(
        max_length=20,
        choices=[(p.value, p.label) for p in Preprocess if p != Preprocess.NONE],
        help_text="The map it is conditioned on; a job's default preprocess.",
    )
    source_kind = models.CharField(max_length=20, choices=SOURCE_KINDS, default="hub")
    source = models.CharField(
        max_length=500,
        help_text="Hugging Face repo id (org/name) or a diffusers folder (relative paths are under MODELS_DIR).",
    )
    revision = models.CharField(max_length=100, blank=True)
    variant = models.CharField(max_length=20, blank=True, help_text='Weight variant, e.g. "fp16".')
    is_test = models.BooleanField(default=False, help_text="Random weights built locally for tests.")
    cost_factor = models.FloatField(
        default=1.5,
        validators=[MinValueValidator(1.0), MaxValueValidator(4.0)],
        help_text="Its jobs cost this many times the checkpoint's price: the ControlNet runs beside the UNet at "
        "every step (bench/controlnet_cost.py measures it).",
    )
    enabled = models.BooleanField(default=True)
    sort_order = models.IntegerField(default=100)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sort_order", "name"]
        verbose_name = "ControlNet"
        constraints = [
            models.CheckConstraint(
                condition=Q(cost_factor__gte=1) & Q(cost_factor__lte=4), name="controlnet_cost_factor_range"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def architecture(self) -> str:
        return FAMILIES[self.family].architecture

    def fits(self, checkpoint: Checkpoint) -> bool:
        """Whether it can guide `checkpoint`: the same architecture, and a
        checkpoint that offers ControlNet."""
        return Mode.CONTROLNET in checkpoint.modes and self.architecture == FAMILIES[checkpoint.family].architecture

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.source_kind == "single_file":
            errors["source_kind"] = "A ControlNet is a diffusers folder or a hub repo."
        else:
            try:
                parse_source(self.source_kind, self.source)
            except ValueError as exc:
                errors["source"] = str(exc)
        if self.family and self.architecture not in CONTROLNET_ARCHITECTURES:
            errors["family"] = "ControlNet runs on SD 1.x and SDXL checkpoints here."
        if errors:
            raise ValidationError(errors)


# A job's LoRAs: at most this many, each weighted within these bounds; on
# these architectures (the worker switches them on the UNet and the CLIP
# text encoders: workers.loras).
MAX_LORAS = 4
LORA_ARCHITECTURES = ("sd1", "sd2", "sdxl")
LORA_WEIGHT_MIN, LORA_WEIGHT_MAX = -2.0, 2.0


class Lora(models.Model):
    """A LoRA the catalog offers: small low-rank weights, trained on one
    family's architecture, that a job stacks on a checkpoint of that
    architecture (up to MAX_LORAS, each with a weight). Staff manage these
    like ControlNets; whether a live worker has its file comes from the
    workers' heartbeats (catalog.availability)."""

    slug = models.SlugField(max_length=80, unique=True, help_text="Stable id used by the API (`loras`).")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    family = models.CharField(
        max_length=20,
        choices=FAMILY_CHOICES,
        help_text="The family it was trained on; it fits every checkpoint of that family's architecture.",
    )
    source = models.CharField(
        max_length=500,
        help_text="One .safetensors file, diffusers' or kohya's key layout (a relative path is under MODELS_DIR).",
    )
    is_test = models.BooleanField(default=False, help_text="Random weights built locally for tests.")
    trigger_words = models.CharField(
        max_length=200, blank=True, help_text="Words it was trained on; the create page adds them to the prompt."
    )
    default_weight = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(LORA_WEIGHT_MIN), MaxValueValidator(LORA_WEIGHT_MAX)],
        help_text="A job's weight when it names the LoRA without one.",
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="loras")
    price_per_image = models.PositiveIntegerField(
        default=0, help_text="Credits added to each image of a job that uses it (0: free)."
    )
    enabled = models.BooleanField(default=True)
    sort_order = models.IntegerField(default=100)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sort_order", "name"]
        verbose_name = "LoRA"
        constraints = [
            models.CheckConstraint(
                condition=Q(default_weight__gte=LORA_WEIGHT_MIN) & Q(default_weight__lte=LORA_WEIGHT_MAX),
                name="lora_default_weight_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def architecture(self) -> str:
        return FAMILIES[self.family].architecture

    def fits(self, checkpoint: Checkpoint) -> bool:
        """Whether it can be stacked on `checkpoint`: the same architecture."""
        return self.architecture in LORA_ARCHITECTURES and self.architecture == FAMILIES[checkpoint.family].architecture

    def clean(self) -> None:
        errors: dict[str, str] = {}
        try:
            parse_source("single_file", self.source)
        except ValueError as exc:
            errors["source"] = str(exc)
        if self.family and self.architecture not in LORA_ARCHITECTURES:
            errors["family"] = "LoRAs run on SD 1.x, SD 2.x and SDXL checkpoints here."
        if errors:
            raise ValidationError(errors)


class CheckpointTestRun(models.Model):
    """A staff "test load": a live worker loads the checkpoint and runs one
    tiny generation; the worker writes the outcome here."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.CASCADE, related_name="test_runs")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    worker = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=40, blank=True)
    load_seconds = models.FloatField(null=True, blank=True)
    run_seconds = models.FloatField(null=True, blank=True)
    error_kind = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)
    result_png = models.BinaryField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"test load of {self.checkpoint} ({self.status})"
