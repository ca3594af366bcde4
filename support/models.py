"""The support chat: one conversation per person (or anonymous visitor),
messages persisted before anything is broadcast.

These models lived in the project shell (`portal`) until the support app was
split out; migrations moved them here without touching a row
(portal 0002 drops them from portal's state, support 0001 adopts the
existing tables, support 0002 renames the tables)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Conversation(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        SNOOZED = "snoozed"
        RESOLVED = "resolved"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="conversations"
    )
    # An anonymous visitor's token, hashed (the token itself lives in their cookie).
    visitor_hash = models.CharField(max_length=64, blank=True, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    job = models.ForeignKey("generation.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    person_read_id = models.BigIntegerField(default=0)
    staff_read_id = models.BigIntegerField(default=0)
    last_message_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-last_message_at"]

    def __str__(self) -> str:
        return f"conversation with {self.user or 'a visitor'}"


class Message(models.Model):
    class Sender(models.TextChoices):
        PERSON = "person"
        STAFF = "staff"
        SYSTEM = "system"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    sender = models.CharField(max_length=8, choices=Sender.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The client's own id for the message: a resend is not a duplicate.
    client_id = models.CharField(max_length=64, blank=True)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"], condition=~Q(client_id=""), name="message_client_id_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.sender}: {self.body[:40]}"
