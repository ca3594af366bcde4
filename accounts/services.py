"""Account rules. Balances belong to billing; this module only asks it."""

from __future__ import annotations

import hashlib
import logging

from django.conf import settings
from django.db import IntegrityError, transaction

from accounts.models import FreeCreditClaim
from billing.ledger import credits_grant
from billing.models import LedgerEntry

log = logging.getLogger(__name__)


def email_fingerprint(email: str) -> str:
    """A stable hash of the address as a mailbox: case-insensitive, and a
    '+tag' in the local part does not make a new address."""
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    return hashlib.sha256(f"{local}@{domain}".encode()).hexdigest()


def free_credits_grant(*, user, email: str) -> LedgerEntry | None:
    """Grant FREE_CREDITS once per verified email address and once per user.

    Returns the grant, or None when this address (or this user) already had
    it, or the setting is 0. Safe to call on every confirmation: the claim
    row and the ledger reference make a repeat a no-op.
    """
    amount = settings.FREE_CREDITS
    if amount <= 0:
        return None
    ref = f"free:user:{user.pk}"
    with transaction.atomic():
        if LedgerEntry.objects.filter(reference=ref).exists():
            return None
        try:
            with transaction.atomic():
                FreeCreditClaim.objects.create(email_hash=email_fingerprint(email))
        except IntegrityError:
            log.info("free credits already claimed for this address; user %s gets none", user.pk)
            return None
        return credits_grant(user=user, amount=amount, ref=ref, memo="Free starting credits")
