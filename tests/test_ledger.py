"""The credit ledger: every rule of billing.ledger, against the real database."""

from __future__ import annotations

import pytest
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
from billing.ledger import (
    credits_adjust,
    credits_capture,
    credits_grant,
    credits_hold,
    credits_release,
    credits_reverse,
)
from billing.models import CreditAccount, LedgerEntry
from billing.selectors import balance_of, charged_amount
from tests.helpers import run_in_threads

pytestmark = pytest.mark.django_db


def ledger_sum(user) -> int:
    return LedgerEntry.objects.filter(account__user=user).aggregate(s=Sum("amount"))["s"] or 0


def test_it_grants_and_records_balance_after(alice):
    entry = credits_grant(user=alice, amount=10, ref="free:user:1", memo="welcome")
    assert (entry.kind, entry.amount, entry.balance_after, entry.memo) == ("grant", 10, 10, "welcome")
    assert balance_of(user=alice) == 10


def test_a_retried_grant_returns_the_first_entry_and_changes_nothing(alice):
    first = credits_grant(user=alice, amount=10, ref="grant:x")
    again = credits_grant(user=alice, amount=10, ref="grant:x")
    assert again.pk == first.pk
    assert balance_of(user=alice) == 10
    assert LedgerEntry.objects.filter(reference="grant:x").count() == 1


def test_a_reference_reused_for_another_operation_is_a_conflict(alice, bob):
    credits_grant(user=alice, amount=10, ref="grant:y")
    with pytest.raises(ReferenceConflict):
        credits_grant(user=alice, amount=5, ref="grant:y")
    with pytest.raises(ReferenceConflict):
        credits_grant(user=bob, amount=10, ref="grant:y")
    with pytest.raises(ReferenceConflict):
        credits_hold(user=alice, amount=1, ref="grant:y")
    assert balance_of(user=alice) == 10
    assert balance_of(user=bob) == 0


@pytest.mark.parametrize("amount", [0, -1, 1.5, "3", True, None])
def test_it_rejects_amounts_that_are_not_positive_integers(alice, amount):
    with pytest.raises(InvalidAmount):
        credits_grant(user=alice, amount=amount, ref="bad")
    with pytest.raises(InvalidAmount):
        credits_hold(user=alice, amount=amount, ref="bad")
    assert not LedgerEntry.objects.exists()


def test_a_hold_debits_and_refuses_to_overdraw(alice):
    credits_grant(user=alice, amount=5, ref="g")
    hold = credits_hold(user=alice, amount=3, ref="hold:job:1")
    assert (hold.amount, hold.balance_after) == (-3, 2)
    with pytest.raises(InsufficientCredits) as info:
        credits_hold(user=alice, amount=3, ref="hold:job:2")
    assert (info.value.needed, info.value.available) == (3, 2)
    assert balance_of(user=alice) == 2
    assert not LedgerEntry.objects.filter(reference="hold:job:2").exists()


def test_a_capture_charges_what_ran_and_returns_the_rest(alice):
    credits_grant(user=alice, amount=10, ref="g")
    hold = credits_hold(user=alice, amount=8, ref="hold:job:1")
    capture = credits_capture(hold_ref="hold:job:1", ref="capture:job:1", amount=5)
    assert (capture.kind, capture.amount, capture.balance_after) == ("capture", 3, 5)
    assert capture.resolves_id == hold.pk
    assert charged_amount(hold=hold) == 5
    assert balance_of(user=alice) == 5


def test_a_capture_cannot_charge_more_than_was_held(alice):
    credits_grant(user=alice, amount=10, ref="g")
    credits_hold(user=alice, amount=2, ref="h")
    with pytest.raises(InvalidAmount):
        credits_capture(hold_ref="h", ref="c", amount=3)
    assert balance_of(user=alice) == 8


def test_a_release_returns_everything(alice):
    credits_grant(user=alice, amount=10, ref="g")
    hold = credits_hold(user=alice, amount=4, ref="h")
    release = credits_release(hold_ref="h", ref="release:h")
    assert (release.amount, release.balance_after) == (4, 10)
    assert charged_amount(hold=hold) == 0


def test_a_hold_resolves_at_most_once(alice):
    credits_grant(user=alice, amount=10, ref="g")
    credits_hold(user=alice, amount=4, ref="h")
    first = credits_capture(hold_ref="h", ref="capture:h")
    assert credits_capture(hold_ref="h", ref="capture:h").pk == first.pk  # a retry
    with pytest.raises(HoldAlreadyResolved):
        credits_release(hold_ref="h", ref="release:h")
    with pytest.raises(HoldAlreadyResolved):
        credits_capture(hold_ref="h", ref="capture:h:again")
    assert balance_of(user=alice) == 6
    assert LedgerEntry.objects.filter(resolves__reference="h").count() == 1


def test_an_unknown_hold_cannot_be_resolved(alice):
    credits_grant(user=alice, amount=1, ref="g")
    with pytest.raises(UnknownHold):
        credits_release(hold_ref="hold:nothing", ref="r")
    with pytest.raises(UnknownHold):
        credits_capture(hold_ref="g", ref="c")  # a grant is not a hold


def test_staff_adjustments_need_a_memo_and_never_go_below_zero(alice, charlie):
    with pytest.raises(InvalidAmount):
        credits_adjust(user=alice, amount=5, ref="adj:1", actor=charlie, memo="  ")
    entry = credits_adjust(user=alice, amount=5, ref="adj:1", actor=charlie, memo="goodwill")
    assert (entry.kind, entry.actor, entry.amount) == ("adjustment", charlie, 5)
    with pytest.raises(InsufficientCredits):
        credits_adjust(user=alice, amount=-6, ref="adj:2", actor=charlie, memo="too much")
    entry = credits_adjust(user=alice, amount=-5, ref="adj:3", actor=charlie, memo="mistake")
    assert (entry.amount, entry.balance_after) == (-5, 0)


def test_a_reversal_takes_back_at_most_the_original_credit(alice):
    credits_grant(user=alice, amount=10, ref="stripe:cs_1", kind=LedgerEntry.Kind.PURCHASE)
    credits_reverse(entry_ref="stripe:cs_1", ref="refund:re_1", amount=4)
    credits_reverse(entry_ref="stripe:cs_1", ref="refund:re_1", amount=4)  # redelivered
    assert balance_of(user=alice) == 6
    with pytest.raises(InvalidAmount):
        credits_reverse(entry_ref="stripe:cs_1", ref="refund:re_2", amount=7)
    rest = credits_reverse(entry_ref="stripe:cs_1", ref="refund:re_2")
    assert rest.amount == -6
    assert balance_of(user=alice) == 0


def test_a_reversal_of_spent_credits_records_debt_and_blocks_spending(alice):
    credits_grant(user=alice, amount=10, ref="stripe:cs_1", kind=LedgerEntry.Kind.PURCHASE)
    credits_hold(user=alice, amount=7, ref="h")
    credits_capture(hold_ref="h", ref="c")
    reversal = credits_reverse(entry_ref="stripe:cs_1", ref="refund:re_1")
    assert (reversal.amount, reversal.shortfall, reversal.balance_after) == (-3, 7, 0)
    account = CreditAccount.objects.get(user=alice)
    assert (account.balance, account.debt) == (0, 7)
    credits_grant(user=alice, amount=5, ref="g2")
    with pytest.raises(SpendingBlocked):
        credits_hold(user=alice, amount=1, ref="h2")
    with pytest.raises(InvalidAmount):  # nothing of that purchase is left to take
        credits_reverse(entry_ref="stripe:cs_1", ref="refund:re_2", amount=1)


def in_debt(user, spent: int = 7) -> None:
    """A 10-credit purchase, `spent` of it spent, then refunded in full."""
    credits_grant(user=user, amount=10, ref="stripe:cs_1", kind=LedgerEntry.Kind.PURCHASE)
    credits_hold(user=user, amount=spent, ref="h")
    credits_capture(hold_ref="h", ref="c")
    credits_reverse(entry_ref="stripe:cs_1", ref="refund:re_1")


def test_a_purchase_pays_the_debt_first_and_adds_the_rest_in_one_entry(alice):
    in_debt(alice)
    entry = credits_grant(user=alice, amount=10, ref="stripe:cs_2", kind=LedgerEntry.Kind.PURCHASE)
    assert (entry.amount, entry.debt_paid, entry.credited, entry.balance_after) == (3, 7, 10, 3)
    again = credits_grant(user=alice, amount=10, ref="stripe:cs_2", kind=LedgerEntry.Kind.PURCHASE)  # a retry
    assert again.pk == entry.pk
    account = CreditAccount.objects.get(user=alice)
    assert (account.balance, account.debt) == (3, 0) and ledger_sum(alice) == 3
    credits_hold(user=alice, amount=3, ref="h2")  # spending works again
    assert balance_of(user=alice) == 0


@pytest.mark.parametrize("resolve", ["release", "capture"])
def test_held_credits_given_back_while_in_debt_pay_the_debt_first(alice, resolve):
    """A refund claws back a purchase while a job runs; the job's hold then
    ends: what it gives back pays the debt, as the claw-back would have."""
    from billing.selectors import charged_amount

    credits_grant(user=alice, amount=10, ref="stripe:cs_1", kind=LedgerEntry.Kind.PURCHASE)
    hold = credits_hold(user=alice, amount=6, ref="h")
    credits_reverse(entry_ref="stripe:cs_1", ref="refund:re_1")  # takes the 4 left; 6 owed
    assert CreditAccount.objects.get(user=alice).debt == 6
    if resolve == "release":
        entry = credits_release(hold_ref="h", ref="r")
        assert (entry.amount, entry.debt_paid, entry.credited) == (0, 6, 6)
        assert charged_amount(hold=hold) == 0
    else:
        entry = credits_capture(hold_ref="h", ref="c", amount=2)  # charges 2, gives 4 back
        assert (entry.amount, entry.debt_paid, entry.credited) == (0, 4, 4)
        assert charged_amount(hold=hold) == 2
    account = CreditAccount.objects.get(user=alice)
    assert (account.balance, account.debt) == (0, 6 - entry.debt_paid) and ledger_sum(alice) == 0


def test_a_credit_smaller_than_the_debt_pays_part_of_it_and_spending_stays_blocked(alice):
    in_debt(alice)
    entry = credits_adjust(user=alice, amount=5, ref="adjust:1", actor=None, memo="goodwill")
    assert (entry.amount, entry.debt_paid, entry.balance_after) == (0, 5, 0)
    account = CreditAccount.objects.get(user=alice)
    assert (account.balance, account.debt) == (0, 2) and ledger_sum(alice) == 0
    with pytest.raises(SpendingBlocked):
        credits_hold(user=alice, amount=1, ref="h2")


def test_refunding_a_purchase_that_paid_debt_takes_back_all_its_credits(alice):
    in_debt(alice)
    credits_grant(user=alice, amount=10, ref="stripe:cs_2", kind=LedgerEntry.Kind.PURCHASE)
    reversal = credits_reverse(entry_ref="stripe:cs_2", ref="refund:re_2")
    assert (reversal.amount, reversal.shortfall) == (-3, 7)
    account = CreditAccount.objects.get(user=alice)
    assert (account.balance, account.debt) == (0, 7) and ledger_sum(alice) == 0
    with pytest.raises(InvalidAmount):
        credits_reverse(entry_ref="stripe:cs_2", ref="refund:re_3", amount=1)


def test_a_raw_update_to_a_negative_balance_is_refused_by_the_database(alice):
    credits_grant(user=alice, amount=1, ref="g")
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditAccount.objects.filter(user=alice).update(balance=-1)
    assert balance_of(user=alice) == 1


def test_a_second_resolution_row_is_refused_by_the_database(alice):
    credits_grant(user=alice, amount=5, ref="g")
    hold = credits_hold(user=alice, amount=2, ref="h")
    credits_release(hold_ref="h", ref="r")
    account = CreditAccount.objects.get(user=alice)
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            account=account, kind="capture", amount=0, balance_after=5, reference="sneaky", resolves=hold
        )


def test_deleting_a_user_keeps_the_money_trail(alice):
    credits_grant(user=alice, amount=3, ref="g")
    account_id = CreditAccount.objects.get(user=alice).pk
    alice.delete()
    account = CreditAccount.objects.get(pk=account_id)
    assert account.user is None
    assert account.entries.count() == 1


# --- Concurrency: real transactions on PostgreSQL ---------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_holds_on_ten_credits_exactly_ten_succeed(alice):
    credits_grant(user=alice, amount=10, ref="g")
    results = run_in_threads(20, lambda i: credits_hold(user=alice, amount=1, ref=f"hold:job:{i}"))
    succeeded = [r for r in results if isinstance(r, LedgerEntry)]
    refused = [r for r in results if isinstance(r, InsufficientCredits)]
    assert (len(succeeded), len(refused)) == (10, 10), results
    assert balance_of(user=alice) == 0
    assert sorted(e.balance_after for e in succeeded) == list(range(10))
    assert ledger_sum(alice) == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_reference_applied_concurrently_gives_one_row(alice):
    results = run_in_threads(10, lambda i: credits_grant(user=alice, amount=10, ref="stripe:cs_same"))
    assert all(isinstance(r, LedgerEntry) for r in results), results
    assert len({r.pk for r in results}) == 1
    assert balance_of(user=alice) == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_capture_and_release_resolve_a_hold_once(alice):
    credits_grant(user=alice, amount=10, ref="g")
    credits_hold(user=alice, amount=6, ref="h")

    def resolve(i: int):
        if i % 2:
            return credits_capture(hold_ref="h", ref=f"capture:{i}")
        return credits_release(hold_ref="h", ref=f"release:{i}")

    results = run_in_threads(8, resolve)
    resolved = [r for r in results if isinstance(r, LedgerEntry)]
    assert len(resolved) == 1, results
    assert all(isinstance(r, HoldAlreadyResolved) for r in results if r is not resolved[0])
    assert balance_of(user=alice) == (4 if resolved[0].kind == "capture" else 10)
    assert ledger_sum(alice) == balance_of(user=alice)
