"""Limits of what a job carries besides its settings (those are the
catalog's: catalog.limits)."""

from __future__ import annotations

# Webhooks: the longest URL accepted, and how much of a receiver's answer
# is kept (characters) for the person and staff to see.
WEBHOOK_URL_MAX = 2000
WEBHOOK_RESPONSE_PREFIX = 200
