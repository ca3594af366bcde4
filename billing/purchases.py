"""Buying credits with Stripe Checkout, and everything Stripe tells us after.

Rules:
- Credits are granted by one function, `_fulfil_session`, from the webhook
  and from the success page alike, once per Checkout Session (ledger
  reference `stripe:<session id>`, order row locked), and only when Stripe
  says `payment_status == "paid"` for the amount of the pack.
- A session is matched to its order by the session id saved on the order,
  or, when that save never happened (a crash right after Stripe answered),
  by the order id in the session's metadata, after checking the session
  against the order (no session yet, same user, pack, amount and currency).
  A mismatch is refused and logged, never credited.
- Calls to Stripe happen before any transaction opens: no row lock (order,
  account, webhook event) is held while Stripe is slow or down. Each handler
  is a pair: `fetch` (network only) then `apply` (database only).
- Each webhook event is stored once by its id; a replay is a no-op. A
  handler error rolls back everything and answers non-2xx so Stripe retries.
- Refunds claw back the refunded share from Stripe's cumulative
  `amount_refunded`, so redeliveries and partial refunds apply once each.
  Credits already spent become debt (billing.ledger.credits_reverse); the
  next purchase pays the debt first (billing.ledger.credits_grant).
- A dispute freezes spending; won: unfrozen; lost: the rest is clawed back.
  Events may arrive in any order: a `created` that arrives after its
  dispute's `closed` changes nothing (no step back, no freeze for good).
"""

from __future__ import annotations

import logging
import uuid

import stripe
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from billing.ledger import account_freeze, credits_grant, credits_reverse
from billing.models import CreditPack, LedgerEntry, Order, StripeEvent
from billing.stripe_api import client

log = logging.getLogger(__name__)
Status = Order.Status


class UnknownOrder(Exception):
    """A session or payment that is not one of our orders (or not yours)."""


class SessionMismatch(UnknownOrder):
    """A session whose metadata names an order it does not match: refused."""


# --- Checkout ---------------------------------------------------------------------------


def checkout_start(*, user, pack: CreditPack, success_url: str, cancel_url: str) -> str:
    """Create the order and its Checkout Session; return the URL to send the
    person to. Call it outside a transaction: the order row is committed
    before Stripe is called, and no lock is held while it answers."""
    order = Order.objects.create(
        user=user, pack=pack, credits=pack.credits, amount_cents=pack.price_cents, currency=pack.currency
    )
    session = client().v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": pack.currency,
                        "unit_amount": pack.price_cents,
                        "product_data": {"name": f"{pack.credits} credits ({pack.name})"},
                    },
                }
            ],
            "client_reference_id": str(order.id),
            "customer_email": user.email,
            "metadata": {"order_id": str(order.id), "user_id": str(user.pk), "pack_id": str(pack.pk)},
            "payment_intent_data": {"metadata": {"order_id": str(order.id)}},
            "success_url": success_url + "?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": cancel_url,
        },
        options={"idempotency_key": f"checkout:{order.id}"},
    )
    # If we die before this line, the webhook still finds the order by the
    # session's metadata (_lock_order_for_session).
    Order.objects.filter(id=order.id, checkout_session_id__isnull=True).update(checkout_session_id=session.id)
    return session.url


def checkout_fulfil(*, session_id: str, user=None) -> Order:
    """Fulfil from the success page (user given: must own the order) or the
    webhook. Safe to call any number of times, concurrently too. Raises
    UnknownOrder for a session that is not the user's, and stripe.StripeError
    when Stripe cannot be reached."""
    if user is not None:
        mine = Order.objects.filter(
            Q(checkout_session_id=session_id) | Q(checkout_session_id__isnull=True, status=Status.PENDING), user=user
        )
        if not mine.exists():  # nothing of theirs it could be: no call to Stripe
            raise UnknownOrder(session_id)
    return _fulfil_session(_retrieve_session(session_id), user=user)


# --- Webhook events -------------------------------------------------------------------


def stripe_event_apply(*, event: dict) -> str:
    """Fetch what the event needs from Stripe (no transaction open), then
    store the (verified) event once and apply it in one transaction."""
    if StripeEvent.objects.filter(id=event["id"]).exists():
        return "duplicate"  # a replay costs no call to Stripe
    fetch, apply = _HANDLERS.get(event["type"], (None, None))
    obj = event["data"]["object"]
    try:
        fetched = fetch(obj) if fetch is not None else None
    except UnknownOrder:  # not one of ours (Stripe has no such session for us): stored, ignored
        log.warning("stripe event %s names nothing of ours; ignored", event["id"])
        apply = None
    with transaction.atomic():
        try:
            with transaction.atomic():
                stored = StripeEvent.objects.create(id=event["id"], type=event["type"], payload=event)
        except IntegrityError:
            return "duplicate"
        if apply is None:
            return "ignored"
        order = apply(obj, fetched)
        _record(stored, order)
        return "applied" if order is not None else "ignored"


def _record(stored: StripeEvent, order: Order | None) -> None:
    if order is not None:
        stored.order = order
        stored.save(update_fields=["order"])


def _fetch_session(session: dict) -> dict:
    return _retrieve_session(session["id"])


def _on_session_paid_or_completed(session: dict, fetched: dict) -> Order | None:
    try:
        return _fulfil_session(fetched)
    except UnknownOrder:
        return None


def _on_async_payment_failed(session: dict, fetched: None) -> Order | None:
    with transaction.atomic():
        try:
            order = _lock_order_for_session(session)
        except UnknownOrder:
            return None
        if order.status == Status.PENDING:
            order.status = Status.FAILED
            order.save(update_fields=["status"])
        return order


def _fetch_for_payment(obj: dict) -> dict | None:
    """The Checkout Session of a payment we have no order for yet (a refund
    or dispute arriving before the checkout events), fetched from Stripe."""
    payment_intent = obj.get("payment_intent")
    if not payment_intent or Order.objects.filter(payment_intent_id=payment_intent).exists():
        return None
    sessions = client().v1.checkout.sessions.list(params={"payment_intent": payment_intent, "limit": 1})
    return _retrieve_session(sessions.data[0].id) if sessions.data else None


def _on_charge_refunded(charge: dict, fetched: dict | None) -> Order | None:
    order = _order_for_payment(charge.get("payment_intent"), session=fetched)
    if order is None:
        return None
    with transaction.atomic():
        order = Order.objects.select_for_update().get(id=order.id)
        refunded = min(int(charge.get("amount_refunded") or 0), order.amount_cents)
        if refunded <= order.amount_refunded_cents:
            return order  # a redelivery, or an older event arriving late
        target = order.credits * refunded // order.amount_cents
        delta = target - order.credits_clawed_back
        if delta > 0 and LedgerEntry.objects.filter(reference=order.grant_ref).exists():
            credits_reverse(
                entry_ref=order.grant_ref,
                ref=f"refund:{order.id}:{refunded}",
                amount=delta,
                memo=f"Refund of {refunded / 100:.2f} {order.currency.upper()}",
            )
        order.amount_refunded_cents, order.credits_clawed_back = refunded, max(target, order.credits_clawed_back)
        if order.status not in (Status.DISPUTED, Status.DISPUTE_LOST):
            order.status = Status.REFUNDED if refunded >= order.amount_cents else Status.PARTIALLY_REFUNDED
        order.save()
        return order


def _on_dispute_created(dispute: dict, fetched: dict | None) -> Order | None:
    order = _order_for_payment(dispute.get("payment_intent"), session=fetched)
    if order is None:
        return None
    with transaction.atomic():
        order = Order.objects.select_for_update().get(id=order.id)
        if _dispute_closed(dispute["id"]) or order.status == Status.DISPUTE_LOST:
            return order  # late (a retry after `closed`): no step back, no freeze
        order.status = Status.DISPUTED
        order.save(update_fields=["status"])
        if order.user is not None:
            account_freeze(user=order.user, frozen=True)
        return order


def _on_dispute_closed(dispute: dict, fetched: dict | None) -> Order | None:
    order = _order_for_payment(dispute.get("payment_intent"), session=fetched)
    if order is None:
        return None
    with transaction.atomic():
        order = Order.objects.select_for_update().get(id=order.id)
        if dispute.get("status") == "lost":
            rest = order.credits - order.credits_clawed_back
            if rest > 0 and LedgerEntry.objects.filter(reference=order.grant_ref).exists():
                credits_reverse(
                    entry_ref=order.grant_ref, ref=f"dispute:{dispute['id']}", amount=rest, memo="Payment dispute lost"
                )
            order.credits_clawed_back = order.credits
            order.status = Status.DISPUTE_LOST
        elif order.status != Status.DISPUTE_LOST:  # a lost dispute is final
            order.status = _status_after_refunds(order)
        order.save()
        others = Order.objects.filter(user=order.user, status=Status.DISPUTED).exclude(id=order.id)
        if order.user is not None and not others.exists():
            account_freeze(user=order.user, frozen=False)
        return order


def _dispute_closed(dispute_id: str) -> bool:
    """Whether a `charge.dispute.closed` of this dispute was applied already."""
    closed = StripeEvent.objects.filter(type="charge.dispute.closed", payload__data__object__id=dispute_id)
    return closed.exists()


def _status_after_refunds(order: Order) -> str:
    if order.amount_refunded_cents == 0:
        return Status.PAID
    if order.amount_refunded_cents >= order.amount_cents:
        return Status.REFUNDED
    return Status.PARTIALLY_REFUNDED


# event type -> (fetch from Stripe, no transaction open; apply to the database)
_HANDLERS = {
    "checkout.session.completed": (_fetch_session, _on_session_paid_or_completed),
    "checkout.session.async_payment_succeeded": (_fetch_session, _on_session_paid_or_completed),
    "checkout.session.async_payment_failed": (None, _on_async_payment_failed),
    "charge.refunded": (_fetch_for_payment, _on_charge_refunded),
    "charge.dispute.created": (_fetch_for_payment, _on_dispute_created),
    "charge.dispute.closed": (_fetch_for_payment, _on_dispute_closed),
}


# --- Staff -----------------------------------------------------------------------------


def order_refund(*, order: Order) -> str:
    """Refund what is left of an order through Stripe. The clawback happens
    when Stripe's charge.refunded webhook arrives, like any other refund.
    Nothing is locked here: the only write is Stripe's, made idempotent by
    the key (order and what was refunded so far)."""
    if not order.payment_intent_id:
        raise UnknownOrder("this order has no payment to refund")
    remaining = order.amount_cents - order.amount_refunded_cents
    refund = client().v1.refunds.create(
        params={"payment_intent": order.payment_intent_id, "amount": remaining},
        options={"idempotency_key": f"refund:{order.id}:{order.amount_refunded_cents}"},
    )
    return refund.id


# --- Internals -------------------------------------------------------------------------


def _retrieve_session(session_id: str) -> dict:
    """The session with its line items; UnknownOrder if Stripe has no such
    session (other Stripe errors, e.g. an outage, propagate)."""
    try:
        session = client().v1.checkout.sessions.retrieve(session_id, params={"expand": ["line_items"]})
    except stripe.InvalidRequestError as exc:
        raise UnknownOrder(session_id) from exc
    return session.to_dict()


def _fulfil_session(session: dict, *, user=None) -> Order:
    with transaction.atomic():
        order = _lock_order_for_session(session)
        if user is not None and order.user_id != user.pk:
            raise UnknownOrder(session["id"])
        if session.get("payment_intent") and not order.payment_intent_id:
            order.payment_intent_id = session["payment_intent"]
            order.save(update_fields=["payment_intent_id"])
        if session.get("payment_status") != "paid":
            return order  # delayed methods: async_payment_succeeded comes later
        items_total = sum(item["amount_total"] for item in session["line_items"]["data"])
        if (session["amount_total"], items_total, session["currency"]) != (
            order.amount_cents,
            order.amount_cents,
            order.currency,
        ):
            raise ValueError(f"session {session['id']} does not match order {order.id}")
        if order.user is not None:
            credits_grant(
                user=order.user,
                amount=order.credits,
                ref=order.grant_ref,
                kind=LedgerEntry.Kind.PURCHASE,
                memo=f"{order.pack.name} pack",
            )
        if order.status in (Status.PENDING, Status.FAILED):
            order.status, order.paid_at = Status.PAID, timezone.now()
            order.save(update_fields=["status", "paid_at"])
        return order


def _lock_order_for_session(session: dict) -> Order:
    """The session's order, locked: by the saved session id, else by the
    order id in its metadata once the session is checked against the order
    (then the session id is saved). Raises UnknownOrder / SessionMismatch."""
    order = Order.objects.select_for_update().filter(checkout_session_id=session["id"]).first()
    if order is not None:
        return order
    metadata = session.get("metadata") or {}
    try:
        order_id = uuid.UUID(str(metadata.get("order_id")))
    except ValueError:
        raise UnknownOrder(session["id"]) from None
    order = Order.objects.select_for_update().filter(id=order_id).first()
    if order is None:
        raise UnknownOrder(session["id"])
    if problem := _mismatch(order, session):
        log.warning("refused Checkout Session %s for order %s: %s", session["id"], order.id, problem)
        raise SessionMismatch(f"session {session['id']} does not match order {order.id}: {problem}")
    order.checkout_session_id = session["id"]
    order.save(update_fields=["checkout_session_id"])
    return order


def _mismatch(order: Order, session: dict) -> str:
    """Why this session cannot be the one created for this order ('' if it can)."""
    metadata = session.get("metadata") or {}
    checks = [
        (order.checkout_session_id is None, f"the order belongs to session {order.checkout_session_id}"),
        (session.get("client_reference_id") == str(order.id), "client_reference_id differs"),
        (order.user_id is not None and metadata.get("user_id") == str(order.user_id), "another user"),
        (metadata.get("pack_id") == str(order.pack_id), "another pack"),
        (session.get("amount_total") == order.amount_cents, "another amount"),
        (session.get("currency") == order.currency, "another currency"),
    ]
    return "; ".join(reason for ok, reason in checks if not ok)


def _order_for_payment(payment_intent: str | None, *, session: dict | None) -> Order | None:
    """Our order for a payment. A refund or dispute can arrive before the
    checkout events: then its session (fetched beforehand) is fulfilled
    first, so the end state is the same in any order."""
    if not payment_intent:
        return None
    order = Order.objects.filter(payment_intent_id=payment_intent).first()
    if order is not None:
        return order
    if session is not None and session.get("payment_intent") == payment_intent:
        try:
            return _fulfil_session(session)
        except UnknownOrder:
            pass
    log.info("payment %s is not one of our orders; ignored", payment_intent)
    return None
