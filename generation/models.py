"""Jobs (one generation request each: its settings, lifecycle, files and
credits), their pictures, and what goes with them: idempotency keys,
webhook secrets and deliveries, moderation rules and flags. What a job can
run (checkpoints, ControlNets, LoRAs) is the catalog app's.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from catalog.limits import MAX_IMAGES
from catalog.models import Checkpoint, ControlNet
from catalog.modes import Mode
from catalog.samplers import sampler_label
from generation.limits import WEBHOOK_RESPONSE_PREFIX, WEBHOOK_URL_MAX
from generation.media import PrivateStorage, private_media


def private_storage() -> PrivateStorage:
    """Uploads and results: the "private" storage (generation.media), a
    folder under MEDIA_ROOT or an S3-compatible bucket; a view that checks
    the owner serves each file. (A callable, so migrations name it and not
    the store that the environment chose.)"""
    return private_media


def _input_path(job: Job, filename: str) -> str:
    return f"inputs/{job.user_id}/{job.id}.png"


def _mask_path(job: Job, filename: str) -> str:
    return f"masks/{job.user_id}/{job.id}.png"


def _control_path(job: Job, filename: str) -> str:
    return f"controls/{job.user_id}/{job.id}.png"


def _result_path(image: JobImage, filename: str) -> str:
    return f"results/{image.job.user_id}/{image.job_id}/{image.id}.png"


class Job(models.Model):
    """One generation request: its mode (catalog.modes), its parameters
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
    # The sampler (catalog.samplers); "" for jobs made before samplers
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
