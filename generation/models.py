"""The model catalog: which diffusion checkpoints the portal offers.

A checkpoint names its pipeline family, where its weights come from, its
defaults and limits, and its price. Whether it is *available* is not stored:
it comes from live worker heartbeats (generation.availability).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from workers.families import FAMILY_CHOICES, SOURCE_KINDS, parse_source


class Tag(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=40)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


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
    default_guidance = models.FloatField(validators=[MinValueValidator(0.0), MaxValueValidator(30.0)])
    max_side = models.PositiveSmallIntegerField(default=1024, help_text="Largest output width or height, pixels.")
    max_steps = models.PositiveSmallIntegerField(default=50)
    allowed_sizes = models.JSONField(
        default=list,
        blank=True,
        help_text="Output sizes offered, as [[width, height], ...]; empty: any multiple of 8 up to max side.",
    )
    price_per_image = models.PositiveIntegerField(
        help_text="Credits for one image at the default steps and up to 512x512 (see generation pricing)."
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
    def queue(self) -> str:
        return queue_for(self.slug)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.default_steps and self.max_steps and self.default_steps > self.max_steps:
            errors["default_steps"] = f"Default steps ({self.default_steps}) exceed max steps ({self.max_steps})."
        if self.max_side and (self.max_side < 64 or self.max_side % 8):
            errors["max_side"] = "Max side must be a multiple of 8, at least 64."
        try:
            parse_source(self.source_kind, self.source)
        except ValueError as exc:
            errors["source"] = str(exc)
        sizes_error = _check_sizes(self.allowed_sizes, self.max_side)
        if sizes_error:
            errors["allowed_sizes"] = sizes_error
        if errors:
            raise ValidationError(errors)


def queue_for(slug: str) -> str:
    """The Celery queue of one checkpoint: workers consume only what they serve."""
    return f"ckpt.{slug}"


def _check_sizes(sizes, max_side: int | None) -> str | None:
    if not isinstance(sizes, list):
        return "Give a list of [width, height] pairs."
    for pair in sizes:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) for v in pair)):
            return f"{pair!r} is not a [width, height] pair of integers."
        if any(v < 64 or v % 8 for v in pair):
            return f"{pair!r}: sides must be multiples of 8, at least 64."
        if max_side and max(pair) > max_side:
            return f"{pair!r} is larger than the max side {max_side}."
    return None


class CheckpointTestRun(models.Model):
    """A staff "test load": a live worker loads the checkpoint and runs one
    tiny generation; the worker writes the outcome here."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.CASCADE, related_name="test_runs")
    requested_by = models.ForeignKey("accounts.User", null=True, on_delete=models.SET_NULL, related_name="+")
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
