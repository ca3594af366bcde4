"""Errors raised by billing.ledger. What a person is told about them (402
insufficient_credits, 402 account_blocked) is decided in one place,
generation.errors.public_error."""

from __future__ import annotations


class CreditError(Exception):
    code = "credit_error"


class InsufficientCredits(CreditError):
    code = "insufficient_credits"

    def __init__(self, *, needed: int, available: int) -> None:
        super().__init__(f"{needed} credits needed, {available} available")
        self.needed = needed
        self.available = available


class SpendingBlocked(CreditError):
    """The account owes clawed-back credits and cannot spend until settled."""

    code = "account_blocked"


class ReferenceConflict(CreditError):
    """A reference was reused for a different operation: a bug, never a retry."""

    code = "reference_conflict"


class UnknownHold(CreditError):
    code = "unknown_hold"


class HoldAlreadyResolved(CreditError):
    """The hold was already captured or released by another reference."""

    code = "hold_already_resolved"


class InvalidAmount(CreditError, ValueError):
    code = "invalid_amount"
