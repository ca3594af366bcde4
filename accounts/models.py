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
