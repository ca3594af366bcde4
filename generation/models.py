"""The model catalog (which diffusion checkpoints the portal offers) and jobs.

A checkpoint names its pipeline family, where its weights come from, its
defaults and limits, and its price. Whether it is *available* is not stored:
it comes from live worker heartbeats (generation.availability).
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from generation.controls import Preprocess
from generation.families import FAMILIES, FAMILY_CHOICES, SOURCE_KINDS, parse_source
from generation.limits import (
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    SIZE_MULTIPLE,
    WEBHOOK_RESPONSE_PREFIX,
    WEBHOOK_URL_MAX,
)
from generation.media import PrivateStorage, private_media
from generation.modes import Mode
from generation.samplers import sampler_label, sampler_names


def private_storage() -> PrivateStorage:
    """Uploads and results: the "private" storage (generation.media), a
    folder under MEDIA_ROOT or an S3-compatible bucket; a view that checks
    the owner serves each file. (A callable, so migrations name it and not
    the store that the environment chose.)"""
    return private_media


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
        help_text="The sampler a job runs with unless it names one (generation/samplers.py lists each family's); "
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
        """The modes its jobs may have (generation.modes): image to image
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
    workers' heartbeats (generation.availability)."""

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
    workers' heartbeats (generation.availability)."""

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


def _input_path(job: Job, filename: str) -> str:
    return f"inputs/{job.user_id}/{job.id}.png"


def _mask_path(job: Job, filename: str) -> str:
    return f"masks/{job.user_id}/{job.id}.png"


def _control_path(job: Job, filename: str) -> str:
    return f"controls/{job.user_id}/{job.id}.png"


def _result_path(image: JobImage, filename: str) -> str:
    return f"results/{image.job.user_id}/{image.job_id}/{image.id}.png"


class Job(models.Model):
    """One generation request: its mode (generation.modes), its parameters
    (generation.params.JobParams), its lifecycle, its credits.

    An image to image or inpainting job has an input picture until retention
    deletes it, an inpainting job its mask too; a text to image job has
    neither; a ControlNet job has its control picture, and an input picture
    when it is its image to image variant (constraints say so).

    Status moves queued -> running -> succeeded | failed | canceled, only
    through generation.services (conditional updates, so a duplicate
    delivery or a late worker changes nothing). The credits move through one
    hold that resolves once: captured on success, released otherwise (the
    ledger references below). Files live in private storage and are served
    only through views that check the owner.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELED = "canceled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="jobs")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # The database default too: rows written before modes existed, and raw
    # inserts, are image to image.
    mode = models.CharField(max_length=12, choices=Mode.choices, default=Mode.IMG2IMG, db_default=Mode.IMG2IMG)

    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True)
    strength = models.FloatField()
    steps = models.PositiveSmallIntegerField()
    guidance_scale = models.FloatField()
    # The sampler (generation.samplers); "" for jobs made before samplers
    # existed: the checkpoint's own scheduler.
    scheduler = models.CharField(max_length=24, blank=True, default="", db_default="")
    # Its LoRAs and their weights, [{"slug": ..., "weight": ...}] in the
    # order given (JobParams.loras); kept when a LoRA leaves the catalog.
    loras = models.JSONField(default=list, blank=True)
    # The hires pass (text to image and image to image): a second, image to
    # image pass at hires_scale times width x height (1 and 0: none).
    hires_scale = models.FloatField(default=1.0, db_default=1.0)
    hires_strength = models.FloatField(default=0.0, db_default=0.0)
    seed = models.BigIntegerField()
    num_images = models.PositiveSmallIntegerField()
    width = models.PositiveSmallIntegerField()
    height = models.PositiveSmallIntegerField()
    input_image = models.FileField(upload_to=_input_path, storage=private_storage, max_length=300, blank=True)
    # Inpainting's mask (grayscale PNG, the input's size; white = change);
    # empty for the other modes and after retention.
    mask = models.FileField(upload_to=_mask_path, storage=private_storage, max_length=300, blank=True)
    mask_blur = models.PositiveSmallIntegerField(default=0, db_default=0)
    # ControlNet: the network, the person's control picture (the map is made
    # from it by `preprocess` on the worker), and how strongly and over which
    # part of the schedule (fractions of the steps) it guides. Empty for the
    # other modes; the picture is deleted by retention.
    controlnet = models.ForeignKey(
        ControlNet, null=True, blank=True, on_delete=models.PROTECT, related_name="jobs", verbose_name="ControlNet"
    )
    control_image = models.FileField(upload_to=_control_path, storage=private_storage, max_length=300, blank=True)
    preprocess = models.CharField(max_length=12, blank=True, default="", db_default="")
    conditioning_scale = models.FloatField(default=1.0, db_default=1.0)
    control_start = models.FloatField(default=0.0, db_default=0.0)
    control_end = models.FloatField(default=1.0, db_default=1.0)

    credits_held = models.PositiveIntegerField()
    credits_charged = models.PositiveIntegerField(null=True, blank=True)
    progress_step = models.PositiveSmallIntegerField(default=0)
    progress_total = models.PositiveSmallIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    # Jobs in the pipeline call of this attempt, this one included (batching
    # across people: workers.services.job_run).
    batch_size = models.PositiveSmallIntegerField(default=1)
    error_code = models.CharField(max_length=40, blank=True)
    error = models.CharField(max_length=500, blank=True)
    # Called on the job's terminal state (generation.webhooks); checked at
    # submit and again before each delivery attempt.
    webhook_url = models.CharField(max_length=WEBHOOK_URL_MAX, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When its input and results were deleted (RESULT_RETENTION_DAYS); the
    # row, its settings and its money stay.
    expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # Staff see other people's jobs and images only with this permission,
        # not for being staff; each image they open is written to the admin log.
        permissions = [("view_others_jobs", "Can see other people's jobs and result images (logged)")]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="job_user_recent"),
            models.Index(fields=["checkpoint", "status", "created_at"], name="job_queue_order"),
            # The fair queue's ranks: a person's queued jobs of a checkpoint,
            # and those they started lately (generation.selectors.fair_keys).
            models.Index(fields=["user", "checkpoint", "status", "created_at"], name="job_fair_queued"),
            models.Index(fields=["user", "checkpoint", "started_at"], name="job_fair_started"),
            # Retention's sweep: ended jobs whose pictures are still kept.
            models.Index(fields=["finished_at"], name="job_retention_due", condition=Q(expired_at=None)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(num_images__gte=1) & Q(num_images__lte=MAX_IMAGES), name="job_num_images_1_4"
            ),
            models.CheckConstraint(condition=Q(strength__gt=0) & Q(strength__lte=1), name="job_strength_range"),
            # A hires pass has its strength; without one (scale 1) none.
            models.CheckConstraint(
                condition=Q(hires_scale=1, hires_strength=0)
                | Q(hires_scale__gt=1, hires_scale__lte=2, hires_strength__gt=0, hires_strength__lte=1),
                name="job_hires_range",
            ),
            # Image to image needs its input; text to image has none (and
            # runs every step); ControlNet may have one (without it every
            # step runs). Retention empties the input of expired jobs.
            models.CheckConstraint(
                condition=Q(mode=Mode.TXT2IMG, input_image="", strength=1)
                | (Q(mode=Mode.CONTROLNET) & (~Q(input_image="") | Q(strength=1) | Q(expired_at__isnull=False)))
                | (~Q(mode__in=[Mode.TXT2IMG, Mode.CONTROLNET]) & (~Q(input_image="") | Q(expired_at__isnull=False))),
                name="job_input_by_mode",
            ),
            # ControlNet has its network and control picture (until
            # retention), and guides within the schedule; the other modes none.
            models.CheckConstraint(
                condition=(
                    Q(mode=Mode.CONTROLNET, controlnet__isnull=False)
                    & (~Q(control_image="") | Q(expired_at__isnull=False))
                    & Q(control_start__gte=0, control_end__lte=1, control_start__lt=models.F("control_end"))
                )
                | (~Q(mode=Mode.CONTROLNET) & Q(controlnet__isnull=True, control_image="")),
                name="job_control_by_mode",
            ),
            # Inpainting has its mask (until retention); the other modes none.
            models.CheckConstraint(
                condition=(Q(mode=Mode.INPAINT) & (~Q(mask="") | Q(expired_at__isnull=False)))
                | (~Q(mode=Mode.INPAINT) & Q(mask="")),
                name="job_mask_by_mode",
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.id} ({self.status})"

    @property
    def results_expire_at(self):
        """When its input and pictures are (or were) deleted: RESULT_RETENTION_DAYS
        after it ended; None while it runs or when they are kept forever."""
        if self.expired_at is not None:
            return self.expired_at
        if self.finished_at is None or not settings.RESULT_RETENTION_DAYS:
            return None
        return self.finished_at + timedelta(days=settings.RESULT_RETENTION_DAYS)

    @property
    def sampler_label(self) -> str:
        return sampler_label(self.scheduler)

    @property
    def control(self) -> str:
        """Its ControlNet's slug (JobParams.control); empty for the other modes."""
        return self.controlnet.slug if self.controlnet_id else ""

    @property
    def hold_ref(self) -> str:
        return f"hold:job:{self.id}"

    @property
    def capture_ref(self) -> str:
        return f"capture:job:{self.id}"

    @property
    def release_ref(self) -> str:
        return f"release:job:{self.id}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class JobImage(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="images")
    index = models.PositiveSmallIntegerField()
    file = models.FileField(upload_to=_result_path, storage=private_storage, max_length=300)
    width = models.PositiveSmallIntegerField()
    height = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="job_image_index_unique")]

    def __str__(self) -> str:
        return f"image {self.index} of {self.job_id}"


class IdempotencyKey(models.Model):
    """An `Idempotency-Key` one person sent with a request that creates a
    job, and the first final answer to it (generation.idempotency).

    One row per (person, key): the unique constraint lets one request of many
    concurrent retries in. `status_code` is null while that request runs; the
    answer (status and JSON body) is written in the same transaction as the
    job and its hold, so a row without an answer never stands for a job.
    `fingerprint` is a hash of the operation, its form fields and the
    uploaded file's bytes: the upload itself is not stored twice. Rows older
    than IDEMPOTENCY_KEY_HOURS are ignored and purged."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique_per_user")]

    def __str__(self) -> str:
        return f"idempotency key {self.key!r} of user {self.user_id}"


class WebhookSecret(models.Model):
    """A person's signing secret for webhooks (Standard Webhooks: "whsec_" and
    base64 of 32 random bytes). Kept in clear: signing needs it. Created on
    first use, replaced by a rotation (generation.webhooks)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret")
    key = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"webhook secret of user {self.user_id}"


class WebhookDelivery(models.Model):
    """The webhook of one finished job: one message (one `webhook_id`, one
    body, signed again at each attempt), sent at least once.

    Attempts are claimed by conditional updates on `attempts`
    (generation.webhooks), so an attempt is sent once however many sweeps or
    messages ask for it. While pending, `next_attempt_at` is when the sweep
    sends the next attempt: the backoff after a failure, or a lease while an
    attempt is under way (a sender that died is followed by the next attempt).
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="webhook_delivery")
    url = models.CharField(max_length=WEBHOOK_URL_MAX)
    webhook_id = models.CharField(max_length=40, unique=True)
    payload = models.TextField(help_text="The exact JSON body sent on every attempt.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_response = models.CharField(max_length=WEBHOOK_RESPONSE_PREFIX, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhook_due", condition=Q(status="pending")),
        ]

    def __str__(self) -> str:
        return f"webhook {self.webhook_id} of job {self.job_id} ({self.status})"


class BlockedTerm(models.Model):
    """A prompt rule staff keep in the admin: a word or phrase that a prompt
    or negative prompt may not contain (whole words, any case; the default
    check generation.moderation.blocked_terms_check). A disabled rule blocks
    nothing and is kept for the record."""

    term = models.CharField(
        max_length=200,
        help_text="A word or phrase, matched as whole words in any case; spaces match any run of spaces.",
    )
    enabled = models.BooleanField(default=True)
    note = models.TextField(blank=True, help_text="Why this rule exists (for staff).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["term"]
        constraints = [
            models.UniqueConstraint(
                Lower("term"), name="blocked_term_unique_any_case", violation_error_message="This term exists already."
            ),
        ]

    def __str__(self) -> str:
        return self.term

    def clean(self) -> None:
        self.term = " ".join(self.term.split())
        if not re.search(r"\w", self.term):
            raise ValidationError({"term": "Give a word or phrase with at least one letter or digit."})


class ModerationFlag(models.Model):
    """What moderation refused, for staff to review (the admin's list).

    Stage "prompt": a submit whose prompt a check refused (no job was made;
    `field` and `text` say which text). Stage "image": a picture of `job` that
    the worker's image classifier flagged (`label`, `score`, `image_index`);
    the picture itself is never stored, and the job failed with nothing
    charged."""

    class Stage(models.TextChoices):
        PROMPT = "prompt"
        IMAGE = "image"

    stage = models.CharField(max_length=10, choices=Stage.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="moderation_flags")
    field = models.CharField(max_length=20, blank=True)
    text = models.TextField(blank=True)
    label = models.CharField(max_length=200, help_text="The rule or classifier label that matched.")
    score = models.FloatField(null=True, blank=True)
    image_index = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.stage} flag: {self.label}"
