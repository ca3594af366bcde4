"""The only code that changes credits.

Every function here:
- runs in one transaction and locks the account's balance row
  (`select_for_update`), so concurrent spending cannot overdraw;
- appends exactly one LedgerEntry and moves the balance by its amount;
- is idempotent on `ref`: called again with a reference that already exists
  for the same operation, it returns the first entry and changes nothing.
  A reference reused for a different operation raises ReferenceConflict.

Reads (balances, ledgers, orders) are in billing.selectors.

Debt: a reversal the balance cannot cover records the rest as debt, which
blocks spending; every later credit (purchase, staff credit, grant, and held
credits given back by a capture or release) pays the debt first and only the
rest reaches the balance.

Holds: `credits_hold` debits the quoted amount; the hold then resolves once,
by `credits_capture` (charge up to the held amount, return the rest) or by
`credits_release` (return all of it).
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Sum

from billing.errors import (
    HoldAlreadyResolved,
    InsufficientCredits,
    InvalidAmount,
    ReferenceConflict,
    SpendingBlocked,
    UnknownHold,
)
from billing.models import CreditAccount, LedgerEntry

Kind = LedgerEntry.Kind
CREDIT_KINDS = (Kind.GRANT, Kind.PURCHASE, Kind.REFUND, Kind.ADJUSTMENT)


def account_of(*, user) -> CreditAccount:
    account, _ = CreditAccount.objects.get_or_create(user=user)
    return account


def held_amount(*, hold: LedgerEntry) -> int:
    return -hold.amount


# --- Writes -------------------------------------------------------------------


def credits_grant(
    *,
    user,
    amount: int,
    ref: str,
    kind: str = Kind.GRANT,
    actor=None,
    memo: str = "",
) -> LedgerEntry:
    """Add credits (free grant, purchase, refund of a charge, staff credit).
    They pay the account's debt first; only the rest reaches the balance
    (still one entry: `amount` the balance change, `debt_paid` the rest)."""
    if kind not in CREDIT_KINDS:
        raise InvalidAmount(f"{kind!r} is not a kind that adds credits")
    _require_positive(amount)
    with transaction.atomic():
        account = _lock_account_of(user)
        if existing := _existing(ref, account=account, kind=kind, amount=amount):
            return existing
        paid = min(account.debt, amount)
        account.debt -= paid
        return _append(account, kind=kind, amount=amount - paid, ref=ref, actor=actor, memo=memo, debt_paid=paid)


def credits_adjust(*, user, amount: int, ref: str, actor, memo: str) -> LedgerEntry:
    """A staff correction: positive adds, negative deducts (never below
    zero). The memo is required: it is the audit trail's only 'why'."""
    if not memo.strip():
        raise InvalidAmount("a staff adjustment needs a memo")
    if amount > 0:
        return credits_grant(user=user, amount=amount, ref=ref, kind=Kind.ADJUSTMENT, actor=actor, memo=memo)
    _require_positive(-amount)
    with transaction.atomic():
        account = _lock_account_of(user)
        if existing := _existing(ref, account=account, kind=Kind.ADJUSTMENT, amount=amount):
            return existing
        if account.balance < -amount:
            raise InsufficientCredits(needed=-amount, available=account.balance)
        return _append(account, kind=Kind.ADJUSTMENT, amount=amount, ref=ref, actor=actor, memo=memo)


def credits_hold(*, user, amount: int, ref: str, memo: str = "") -> LedgerEntry:
    """Reserve `amount` credits for work not yet done. Raises
    InsufficientCredits (nothing changes) when the balance is short."""
    _require_positive(amount)
    with transaction.atomic():
        account = _lock_account_of(user)
        if existing := _existing(ref, account=account, kind=Kind.HOLD, amount=-amount):
            return existing
        if account.debt > 0:
            raise SpendingBlocked(f"account owes {account.debt} clawed-back credits")
        if account.frozen:
            raise SpendingBlocked("a payment of this account is disputed")
        if account.balance < amount:
            raise InsufficientCredits(needed=amount, available=account.balance)
        return _append(account, kind=Kind.HOLD, amount=-amount, ref=ref, memo=memo)


def credits_capture(*, hold_ref: str, ref: str, amount: int | None = None, memo: str = "") -> LedgerEntry:
    """Charge `amount` (default: all) of a hold and return the rest."""
    with transaction.atomic():
        hold, account = _lock_hold(hold_ref)
        if earlier := _earlier_resolution(hold, kind=Kind.CAPTURE, ref=ref):
            return earlier
        held = held_amount(hold=hold)
        charge = held if amount is None else amount
        if not 0 <= charge <= held:
            raise InvalidAmount(f"cannot charge {charge} of a {held}-credit hold")
        return _give_back(account, kind=Kind.CAPTURE, amount=held - charge, ref=ref, memo=memo, resolves=hold)


def credits_release(*, hold_ref: str, ref: str, memo: str = "") -> LedgerEntry:
    """Return all of a hold: the person pays nothing."""
    with transaction.atomic():
        hold, account = _lock_hold(hold_ref)
        if earlier := _earlier_resolution(hold, kind=Kind.RELEASE, ref=ref):
            return earlier
        return _give_back(account, kind=Kind.RELEASE, amount=held_amount(hold=hold), ref=ref, memo=memo, resolves=hold)


def credits_reverse(
    *,
    entry_ref: str,
    ref: str,
    amount: int | None = None,
    actor=None,
    memo: str = "",
) -> LedgerEntry:
    """Take back (part of) an earlier credit: a refunded purchase, a lost
    dispute, a mistaken grant. Never more than that credit's amount in all.
    What the balance cannot cover becomes the account's debt (the row's
    `shortfall`), which blocks spending until settled."""
    with transaction.atomic():
        original = LedgerEntry.objects.filter(reference=entry_ref).first()
        if original is None or original.kind not in CREDIT_KINDS or original.credited <= 0:
            raise InvalidAmount(f"{entry_ref!r} is not a credit that can be reversed")
        account = CreditAccount.objects.select_for_update().get(pk=original.account_id)
        if existing := LedgerEntry.objects.filter(reference=ref).first():
            if existing.reverses_id != original.id:
                raise ReferenceConflict(ref)
            return existing
        already = original.reversals.aggregate(taken=Sum("amount", default=0), owed=Sum("shortfall", default=0))
        remaining = original.credited + already["taken"] - already["owed"]
        wanted = remaining if amount is None else amount
        if not 0 < wanted <= remaining:
            raise InvalidAmount(f"cannot reverse {wanted}; {remaining} of {entry_ref} is left")
        taken = min(wanted, account.balance)
        shortfall = wanted - taken
        if shortfall:
            account.debt += shortfall
        return _append(
            account,
            kind=Kind.REVERSAL,
            amount=-taken,
            ref=ref,
            actor=actor,
            memo=memo,
            reverses=original,
            shortfall=shortfall,
        )


def account_freeze(*, user, frozen: bool) -> None:
    """Freeze (dispute opened) or unfreeze spending; balances are untouched."""
    with transaction.atomic():
        account = _lock_account_of(user)
        account.frozen = frozen
        account.save(update_fields=["frozen", "updated_at"])


# --- Internals ----------------------------------------------------------------


def _require_positive(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidAmount(f"amount must be a positive integer, not {amount!r}")


def _lock_account_of(user) -> CreditAccount:
    if user is None or not user.pk:
        raise InvalidAmount("credits belong to a saved user")
    account, _ = CreditAccount.objects.get_or_create(user=user)
    return CreditAccount.objects.select_for_update().get(pk=account.pk)


def _lock_hold(hold_ref: str) -> tuple[LedgerEntry, CreditAccount]:
    hold = LedgerEntry.objects.filter(reference=hold_ref, kind=Kind.HOLD).first()
    if hold is None:
        raise UnknownHold(hold_ref)
    account = CreditAccount.objects.select_for_update().get(pk=hold.account_id)
    return hold, account


def _existing(ref: str, *, account: CreditAccount, kind: str, amount: int) -> LedgerEntry | None:
    """The entry a retry already made, read after the lock is held, so a
    concurrent first attempt has either committed or not started."""
    entry = LedgerEntry.objects.filter(reference=ref).first()
    if entry is None:
        return None
    if (entry.account_id, entry.kind, entry.credited) != (account.pk, kind, amount):
        raise ReferenceConflict(ref)
    return entry


def _earlier_resolution(hold: LedgerEntry, *, kind: str, ref: str) -> LedgerEntry | None:
    """With the account locked: the resolution a retry already made, or None
    when the hold is open. Raises if something else resolved it."""
    resolution = LedgerEntry.objects.filter(resolves=hold).first()
    if resolution is not None:
        if resolution.reference == ref and resolution.kind == kind:
            return resolution
        raise HoldAlreadyResolved(f"{hold.reference} was resolved by {resolution.reference}")
    if LedgerEntry.objects.filter(reference=ref).exists():
        raise ReferenceConflict(ref)
    return None


def _give_back(account: CreditAccount, *, kind: str, amount: int, ref: str, **fields) -> LedgerEntry:
    """Return held credits: like any credit they pay the debt first (a
    claw-back while the job ran would have taken them had they not been
    held); the entry's `debt_paid` says how much."""
    paid = min(account.debt, amount)
    account.debt -= paid
    return _append(account, kind=kind, amount=amount - paid, ref=ref, debt_paid=paid, **fields)


def _append(account: CreditAccount, *, kind: str, amount: int, ref: str, **fields) -> LedgerEntry:
    account.balance += amount
    account.save(update_fields=["balance", "debt", "updated_at"])  # `frozen` changes only via account_freeze
    try:
        with transaction.atomic():
            return LedgerEntry.objects.create(
                account=account,
                kind=kind,
                amount=amount,
                balance_after=account.balance,
                reference=ref,
                **fields,
            )
    except IntegrityError as exc:
        # The lock is per account, so the same reference used on another
        # account at the same moment gets here. The outer transaction rolls
        # back the balance change with the exception.
        if LedgerEntry.objects.filter(reference=ref).exists():
            raise ReferenceConflict(ref) from exc
        raise
