from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models


class FreeCreditClaim(models.Model):
    """One row per email address that has received the free starting credits.

    Keyed by a hash of the normalised address, not by user, so that it
    outlives the account: deleting an account and signing up again with the
    same address does not grant twice, and no plain address is kept after
    the person is gone.
    """

    email_hash = models.CharField(max_length=64, unique=True)
    claimed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"free credits claimed {self.claimed_at:%Y-%m-%d} ({self.email_hash[:10]}…)"


class User(AbstractUser):
    """The project's user model (swappable from day one). People sign in with
    their email; allauth fills `username` automatically."""

    class QueueWeight(models.IntegerChoices):
        STANDARD = 1, "Standard: one job per round"
        PRIORITY = 2, "Priority: two jobs per round"
        PARTNER = 4, "Partner: four jobs per round"

    # The fair queue (generation.selectors.fair_queue) takes this many of the
    # person's jobs per round across people; everyone still gets a turn each
    # round, so no class starves another. Set by staff.
    queue_weight = models.PositiveSmallIntegerField(
        choices=QueueWeight.choices,
        default=QueueWeight.STANDARD,
        help_text="Jobs per round of the fair queue; every account still gets one per round.",
    )

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"


class ApiKey(models.Model):
    """A personal API key. Only its SHA-256 is stored; the key itself is
    shown once, at creation. `prefix` lets people tell their keys apart."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=60)
    prefix = models.CharField(max_length=12)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
