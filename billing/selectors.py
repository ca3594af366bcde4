"""Reads of balances, ledgers and orders that views of several apps share.
Each is one query; nothing here changes a balance (that is billing.ledger)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from billing.ledger import held_amount
from billing.models import CreditAccount, CreditPack, LedgerEntry, Order

RECENT = 10


def balance_of(*, user) -> int:
    """The spendable balance; 0 for a user who never had credits."""
    return CreditAccount.objects.filter(user=user).values_list("balance", flat=True).first() or 0


@dataclass(frozen=True)
class Standing:
    """What a person can spend, and why not when they cannot."""

    balance: int = 0
    debt: int = 0  # clawed-back credits not yet paid; blocks spending
    frozen: bool = False  # a payment is disputed; blocks spending until it closes

    @property
    def blocked(self) -> bool:
        return self.debt > 0 or self.frozen


def standing_of(*, user) -> Standing:
    """Balance, debt and dispute freeze in one query."""
    row = CreditAccount.objects.filter(user=user).values("balance", "debt", "frozen").first()
    return Standing(**row) if row else Standing()


def debts_of(*, user, limit: int = RECENT) -> list[LedgerEntry]:
    """The clawbacks the balance could not cover (the debt's origin), newest
    first, with the purchase each one took back."""
    rows = entries_of(user=user).filter(kind=LedgerEntry.Kind.REVERSAL, shortfall__gt=0)
    return list(rows.select_related("reverses")[:limit])


def entries_of(*, user) -> QuerySet[LedgerEntry]:
    """The user's ledger, newest first."""
    return LedgerEntry.objects.filter(account__user=user).order_by("-id")


def charged_amount(*, hold: LedgerEntry) -> int | None:
    """What a hold finally cost: None while open, 0 if released."""
    resolution = LedgerEntry.objects.filter(resolves=hold).first()
    if resolution is None:
        return None
    return held_amount(hold=hold) - resolution.credited


def refunds_of(*, user, limit: int = RECENT) -> list[LedgerEntry]:
    """Credits given back to the user (refunds and reversals), newest first."""
    kinds = [LedgerEntry.Kind.REFUND, LedgerEntry.Kind.REVERSAL]
    return list(entries_of(user=user).filter(kind__in=kinds)[:limit])


def orders_of(*, user) -> QuerySet[Order]:
    """The user's credit pack orders, newest first, with their pack."""
    return Order.objects.filter(user=user).select_related("pack")


def packs_for_sale() -> QuerySet[CreditPack]:
    return CreditPack.objects.filter(active=True)
