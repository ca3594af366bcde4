"""Reads of balances, ledgers and orders that views of several apps share,
and the staff dashboard's money figures. Each is one query; nothing here
changes a balance (that is billing.ledger)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.core.cache import cache
from django.db.models import Case, Count, F, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.ledger import held_amount
from billing.models import CreditAccount, CreditPack, LedgerEntry, Order, money

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


# --- Totals for operators (metrics, dashboard) ---------------------------------------


# Ledger rows older than this are folded into running sums kept in the cache
# (the ledger is append-only): a scrape then reads only the newer rows, not
# the whole books (bench/metrics_scrape.py). A ledger transaction lasts
# milliseconds; a row committed this long after it was numbered would be
# missed, so the margin is wide.
SETTLED_SECONDS = 600
_SUMS_KEY = "billing:ledger-sums:v1"
_SUM_FIELDS = ("net", "paid", "owed", "deducted")


def _sums_of(rows: QuerySet[LedgerEntry]) -> dict[str, int]:
    """Flat sums over `rows`: "<kind>:<field>" (net amount, debt paid,
    shortfall owed, amount deducted) and "resolved:<kind>" (credits of the
    holds that capture and release rows resolve). Two queries."""
    Kind = LedgerEntry.Kind
    sums: dict[str, int] = {}
    for row in (
        rows.values("kind")
        .annotate(
            net=Sum("amount"),
            paid=Sum("debt_paid"),
            owed=Sum("shortfall"),
            deducted=Sum(Case(When(amount__lt=0, then=-F("amount")), default=Value(0))),
        )
        .order_by()
    ):
        for field in _SUM_FIELDS:
            sums[f"{row['kind']}:{field}"] = row[field]
    resolutions = rows.filter(kind__in=[Kind.CAPTURE, Kind.RELEASE]).values("kind")
    for row in resolutions.annotate(held=Sum("resolves__amount")).order_by():
        sums[f"resolved:{row['kind']}"] = -row["held"]
    return sums


def _added(*parts: dict[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


def ledger_sums() -> dict[str, int]:
    """_sums_of the whole ledger, reading only the rows of the last
    SETTLED_SECONDS (and, now and then, those that settled since the last
    fold): three queries, five when it folds."""
    base = cache.get(_SUMS_KEY) or {"upto": 0, "sums": {}}
    settled = (
        LedgerEntry.objects.filter(created_at__lt=timezone.now() - timedelta(seconds=SETTLED_SECONDS))
        .order_by("-created_at")
        .values_list("id", flat=True)
        .first()
    ) or 0
    if settled > base["upto"]:
        folded = _sums_of(LedgerEntry.objects.filter(id__gt=base["upto"], id__lte=settled))
        base = {"upto": settled, "sums": _added(base["sums"], folded)}
        cache.set(_SUMS_KEY, base, timeout=None)
    return _added(base["sums"], _sums_of(LedgerEntry.objects.filter(id__gt=base["upto"])))


def credit_totals(sums: dict[str, int] | None = None) -> dict[str, int]:
    """Credits moved since the books began, by what moved them; every figure
    only grows (the ledger is append-only). From ledger_sums().

    granted, sold, refunded: credited by grants, purchases and refunds of
    charges (debt they paid included); held: put on hold at submit;
    captured: charged when a job succeeded; released: given back when a job
    failed or was canceled (the unused rest of a partly charged hold is in
    neither); clawed_back: taken back by reversals (a refunded or disputed
    payment), debt they left included; adjusted_in, adjusted_out: staff
    corrections that added and that deducted credits."""
    Kind = LedgerEntry.Kind
    sums = ledger_sums() if sums is None else sums

    def get(kind: str, field: str) -> int:
        return sums.get(f"{kind}:{field}", 0)

    def credited(kind: str) -> int:
        return get(kind, "net") + get(kind, "paid")

    return {
        "granted": credited(Kind.GRANT),
        "sold": credited(Kind.PURCHASE),
        "refunded": credited(Kind.REFUND),
        "held": -get(Kind.HOLD, "net"),
        "captured": sums.get(f"resolved:{Kind.CAPTURE}", 0) - credited(Kind.CAPTURE),
        "released": credited(Kind.RELEASE),
        "clawed_back": get(Kind.REVERSAL, "owed") - get(Kind.REVERSAL, "net"),
        "adjusted_in": credited(Kind.ADJUSTMENT) + get(Kind.ADJUSTMENT, "deducted"),
        "adjusted_out": get(Kind.ADJUSTMENT, "deducted"),
    }


def credits_outstanding(sums: dict[str, int] | None = None) -> dict[str, int]:
    """What the books owe people now: `liability` is the sum of all
    spendable balances (credits people can still spend; open holds are
    already deducted from them), `held` the credits on hold for jobs not yet
    ended (every hold less those resolved), and `debt` what people owe back
    (clawbacks their balance could not cover). One query and ledger_sums()."""
    Kind = LedgerEntry.Kind
    sums = ledger_sums() if sums is None else sums
    balances = CreditAccount.objects.aggregate(total=Sum("balance", default=0), debt=Sum("debt", default=0))
    held = (
        -sums.get(f"{Kind.HOLD}:net", 0)
        - sums.get(f"resolved:{Kind.CAPTURE}", 0)
        - sums.get(f"resolved:{Kind.RELEASE}", 0)
    )
    return {"liability": balances["total"], "held": held, "debt": balances["debt"]}


@dataclass(frozen=True)
class Sales:
    """Paid credit pack orders in one currency: since the dashboard's cut-off
    (`day_*`) and ever (`total_*`). Cents are what Stripe charged; refunds
    are subtracted in `*_net_cents`."""

    currency: str
    day_orders: int
    day_cents: int
    day_refunded_cents: int
    day_credits: int
    total_orders: int
    total_cents: int
    total_refunded_cents: int
    total_credits: int

    @property
    def day_net_cents(self) -> int:
        return self.day_cents - self.day_refunded_cents

    @property
    def total_net_cents(self) -> int:
        return self.total_cents - self.total_refunded_cents

    def display(self, cents: str) -> str:
        return money(getattr(self, cents), self.currency)

    @property
    def day_display(self) -> str:
        return f"{self.display('day_cents')} ({self.display('day_net_cents')} after refunds)"

    @property
    def total_display(self) -> str:
        return f"{self.display('total_cents')} ({self.display('total_net_cents')} after refunds)"


def sales_summary(*, since) -> list[Sales]:
    """Revenue and credits sold per currency, from orders that were paid
    (whatever became of them later): one query."""
    recent = Q(paid_at__gte=since)
    rows = (
        Order.objects.filter(paid_at__isnull=False)
        .order_by("currency")
        .values("currency")
        .annotate(
            day_orders=Count("pk", filter=recent),
            day_cents=Coalesce(Sum("amount_cents", filter=recent), 0),
            day_refunded_cents=Coalesce(Sum("amount_refunded_cents", filter=recent), 0),
            day_credits=Coalesce(Sum("credits", filter=recent), 0),
            total_orders=Count("pk"),
            total_cents=Sum("amount_cents"),
            total_refunded_cents=Sum("amount_refunded_cents"),
            total_credits=Sum("credits"),
        )
    )
    return [Sales(**row) for row in rows]
