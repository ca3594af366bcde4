"""Property-based: random sequences of ledger operations (with retries of
earlier ones) keep the ledger's invariants and agree with a tiny model."""

from __future__ import annotations

from django.db.models import Count, Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase

from billing.errors import CreditError, HoldAlreadyResolved, InsufficientCredits, InvalidAmount, SpendingBlocked
from billing.ledger import credits_capture, credits_grant, credits_hold, credits_release, credits_reverse
from billing.models import CreditAccount, LedgerEntry
from tests.conftest import make_user

USERS = 2
op = st.one_of(
    st.tuples(st.just("grant"), st.integers(0, USERS - 1), st.integers(1, 20)),
    st.tuples(st.just("hold"), st.integers(0, USERS - 1), st.integers(1, 15)),
    st.tuples(st.just("capture"), st.integers(0, 30), st.integers(0, 15)),
    st.tuples(st.just("release"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("reverse"), st.integers(0, 30), st.integers(1, 20)),
    st.tuples(st.just("retry"), st.integers(0, 60), st.just(0)),
)


class Model:
    """What the ledger should say, computed without it."""

    def __init__(self) -> None:
        self.balance = [0] * USERS
        self.debt = [0] * USERS
        self.holds: list[dict] = []
        self.grants: list[dict] = []
        self.done: dict[str, tuple] = {}


class LedgerPropertyTests(TestCase):
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ops=st.lists(op, max_size=40))
    def test_random_operation_sequences_keep_the_invariants(self, ops):
        users = [make_user(f"p{i}@example.com") for i in range(USERS)]
        model = Model()
        applied: list[tuple] = []
        for number, (name, a, b) in enumerate(ops):
            if name == "retry":
                if not applied:
                    continue
                call = applied[a % len(applied)]
            else:
                call = self._plan(model, number, name, a, b)
                if call is None:
                    continue
            self._apply(model, users, call)
            applied.append(call)
        self._check(model, users)

    def _plan(self, model: Model, number: int, name: str, a: int, b: int) -> tuple | None:
        if name in ("grant", "hold"):
            return (name, f"{name}:{number}", a, b)
        pool = model.grants if name == "reverse" else model.holds
        if not pool:
            return None
        target = pool[a % len(pool)]
        return (name, f"{name}:{number}", target["ref"], b)

    def _apply(self, model: Model, users, call: tuple) -> None:
        name, ref, target, amount = call
        expected = self._expect(model, call)
        try:
            if name == "grant":
                credits_grant(user=users[target], amount=amount, ref=ref)
            elif name == "hold":
                credits_hold(user=users[target], amount=amount, ref=ref)
            elif name == "capture":
                credits_capture(hold_ref=target, ref=ref, amount=amount)
            elif name == "release":
                credits_release(hold_ref=target, ref=ref)
            else:
                credits_reverse(entry_ref=target, ref=ref, amount=amount)
            outcome = None
        except CreditError as exc:
            outcome = type(exc)
        self.assertEqual(outcome, expected, call)

    def _expect(self, model: Model, call: tuple):
        """Apply `call` to the model; return the error class expected, or None."""
        name, ref, target, amount = call
        if ref in model.done:
            return model.done[ref]
        error = None
        if name == "grant":
            paid = min(model.debt[target], amount)  # credits pay the debt first
            model.debt[target] -= paid
            model.balance[target] += amount - paid
            model.grants.append({"ref": ref, "user": target, "left": amount})
        elif name == "hold":
            if model.debt[target]:
                error = SpendingBlocked
            elif model.balance[target] < amount:
                error = InsufficientCredits
            else:
                model.balance[target] -= amount
                model.holds.append({"ref": ref, "user": target, "amount": amount, "resolved": False})
        elif name in ("capture", "release"):
            hold = next(h for h in model.holds if h["ref"] == target)
            charge = amount if name == "capture" else 0
            if hold["resolved"]:
                error = HoldAlreadyResolved
            elif charge > hold["amount"]:
                error = InvalidAmount
            else:
                hold["resolved"] = True
                back = hold["amount"] - charge
                paid = min(model.debt[hold["user"]], back)  # given back, it pays the debt first too
                model.debt[hold["user"]] -= paid
                model.balance[hold["user"]] += back - paid
        else:
            grant = next(g for g in model.grants if g["ref"] == target)
            if amount > grant["left"]:
                error = InvalidAmount
            else:
                user = grant["user"]
                taken = min(amount, model.balance[user])
                model.balance[user] -= taken
                model.debt[user] += amount - taken
                grant["left"] -= amount
        # A refusal is not remembered: a retry is judged afresh, as the ledger does.
        if error is None:
            model.done[ref] = None
        return error

    def _check(self, model: Model, users) -> None:
        for i, user in enumerate(users):
            account = CreditAccount.objects.filter(user=user).first()
            balance = account.balance if account else 0
            debt = account.debt if account else 0
            total = LedgerEntry.objects.filter(account__user=user).aggregate(s=Sum("amount"))["s"] or 0
            self.assertEqual(total, balance)
            self.assertGreaterEqual(balance, 0)
            self.assertEqual((balance, debt), (model.balance[i], model.debt[i]))
            owed = LedgerEntry.objects.filter(account__user=user).aggregate(
                made=Sum("shortfall", default=0), paid=Sum("debt_paid", default=0)
            )
            self.assertEqual(owed["made"] - owed["paid"], debt)
            last = LedgerEntry.objects.filter(account__user=user).order_by("-id").first()
            self.assertEqual(last.balance_after if last else 0, balance)
        over_resolved = LedgerEntry.objects.filter(kind="hold").annotate(n=Count("resolution")).filter(n__gt=1).count()
        self.assertEqual(over_resolved, 0)
        open_holds = LedgerEntry.objects.filter(kind="hold", resolution__isnull=True).count()
        self.assertEqual(open_holds, sum(1 for h in model.holds if not h["resolved"]))
