"""Credit balances and the append-only ledger.

Invariants (enforced by billing.ledger, backed by the database):
- A balance is never negative (CHECK constraint).
- Every balance change is exactly one LedgerEntry; entries are never edited
  or deleted. The sum of an account's entry amounts equals its balance.
- Each entry has a unique business reference, so a retried operation applies
  once.
- A hold is resolved (captured or released) at most once (unique
  `resolves`).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class CreditAccount(models.Model):
    """One balance row per user; the row that spending locks."""

    # SET_NULL: deleting a person keeps the money trail (their account row and
    # ledger) for audits, detached from the deleted user.
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="credit_account",
    )
    balance = models.IntegerField(default=0)
    # Credits clawed back (refund, lost dispute) that the balance could not
    # cover. While it is above zero the account cannot spend; the next
    # credits that arrive (a purchase, a staff credit) pay it first.
    # Always the sum of the entries' `shortfall` less their `debt_paid`.
    debt = models.IntegerField(default=0)
    # Spending is frozen while a payment of this account is disputed.
    frozen = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [("adjust_credits", "Can grant or deduct credits (staff adjustment)")]
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="credit_balance_non_negative"),
            models.CheckConstraint(condition=Q(debt__gte=0), name="credit_debt_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.user or 'deleted user'}: {self.balance} credits"


class LedgerEntry(models.Model):
    class Kind(models.TextChoices):
        GRANT = "grant", "Grant"
        PURCHASE = "purchase", "Purchase"
        HOLD = "hold", "Hold"
        CAPTURE = "capture", "Capture"
        RELEASE = "release", "Release"
        REFUND = "refund", "Refund"
        REVERSAL = "reversal", "Reversal"
        ADJUSTMENT = "adjustment", "Adjustment"

    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Signed change to the balance: negative for a hold or a deduction.
    amount = models.IntegerField()
    balance_after = models.IntegerField()
    # Business reference, e.g. "hold:job:42", "stripe:cs_123", "free:user:7".
    reference = models.CharField(max_length=200, unique=True)
    # A capture or release points at the hold it resolves; unique, so a hold
    # resolves at most once even if two workers race.
    resolves = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="resolution",
    )
    # A reversal points at the credit it takes back (grant, purchase...).
    reverses = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="reversals",
    )
    # Reversals only: the part the balance could not cover, added to the
    # account's debt instead (the balance never goes negative).
    shortfall = models.IntegerField(default=0)
    # Credits and hold resolutions only: the part that paid the account's debt
    # instead of reaching the balance. `amount + debt_paid` is what was
    # credited (the pack's credits, the staff grant); `amount` is the
    # balance change, so the entries still sum to the balance.
    debt_paid = models.IntegerField(default=0)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who caused the change: a staff member for adjustments, else empty (system).",
    )
    memo = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["account", "-id"], name="ledger_account_recent")]
        constraints = [
            models.CheckConstraint(condition=Q(balance_after__gte=0), name="ledger_balance_after_non_negative"),
            models.CheckConstraint(
                condition=Q(kind__in=["capture", "release"], resolves__isnull=False)
                | (~Q(kind__in=["capture", "release"]) & Q(resolves__isnull=True)),
                name="ledger_resolution_iff_capture_or_release",
            ),
            models.CheckConstraint(
                condition=~Q(kind="hold") | Q(amount__lt=0),
                name="ledger_hold_debits",
            ),
            models.CheckConstraint(condition=Q(shortfall__gte=0), name="ledger_shortfall_non_negative"),
            models.CheckConstraint(
                condition=Q(debt_paid=0)
                | Q(debt_paid__gt=0, kind__in=["grant", "purchase", "refund", "adjustment", "capture", "release"]),
                name="ledger_debt_paid_by_credits_only",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.reference} {self.amount:+d}"

    @property
    def credited(self) -> int:
        """What a credit (or a hold's resolution) gave in all: to the balance plus to the debt."""
        return self.amount + self.debt_paid


def money(cents: int, currency: str) -> str:
    return f"{cents / 100:.2f} {currency.upper()}"


class CreditPack(models.Model):
    """What people can buy; managed by staff in the admin."""

    name = models.CharField(max_length=80)
    credits = models.PositiveIntegerField()
    price_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="usd")
    active = models.BooleanField(default=True)
    sort_order = models.IntegerField(default=100)

    class Meta:
        ordering = ["sort_order", "price_cents"]
        constraints = [
            models.CheckConstraint(condition=Q(credits__gte=1), name="pack_credits_positive"),
            models.CheckConstraint(condition=Q(price_cents__gte=50), name="pack_price_at_least_50_cents"),
        ]

    def __str__(self) -> str:
        return f"{self.name}: {self.credits} credits for {self.price_display}"

    @property
    def price_display(self) -> str:
        return money(self.price_cents, self.currency)


class Order(models.Model):
    """One Stripe Checkout purchase of a pack, and what became of it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Awaiting payment"
        PAID = "paid", "Paid"
        FAILED = "failed", "Payment failed"
        PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
        REFUNDED = "refunded", "Refunded"
        DISPUTED = "disputed", "Disputed"
        DISPUTE_LOST = "dispute_lost", "Dispute lost"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="orders")
    pack = models.ForeignKey(CreditPack, on_delete=models.PROTECT, related_name="orders")
    credits = models.PositiveIntegerField()
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    checkout_session_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    amount_refunded_cents = models.PositiveIntegerField(default=0)
    credits_clawed_back = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("refund_order", "Can refund an order through Stripe")]

    def __str__(self) -> str:
        return f"order {self.id} ({self.status})"

    @property
    def amount_display(self) -> str:
        return money(self.amount_cents, self.currency)

    @property
    def grant_ref(self) -> str:
        return f"stripe:{self.checkout_session_id}"


class StripeEvent(models.Model):
    """Every webhook event once, by Stripe's event id: a replay is a no-op."""

    id = models.CharField(primary_key=True, max_length=255)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"
