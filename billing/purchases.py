"""Buying credits with Stripe Checkout, and everything Stripe tells us after.

Rules:
- Credits are granted by one function, `_fulfil_session`, from the webhook
  and from the success page alike, once per Checkout Session (ledger
  reference `stripe:<session id>`, order row locked), and only when Stripe
  says `payment_status == "paid"` for the amount of the pack.
- Each webhook event is stored once by its id; a replay is a no-op. A
  handler error rolls back everything and answers non-2xx so Stripe retries.
- Refunds claw back the refunded share from Stripe's cumulative
  `amount_refunded`, so redeliveries and partial refunds apply once each.
  Credits already spent become debt (billing.ledger.credits_reverse); the
  next purchase pays the debt first (billing.ledger.credits_grant).
- A dispute freezes spending; won: unfrozen; lost: the rest is clawed back.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.ledger import account_freeze, credits_grant, credits_reverse
from billing.models import CreditPack, LedgerEntry, Order, StripeEvent
from billing.stripe_api import client

log = logging.getLogger(__name__)
Status = Order.Status


class UnknownOrder(Exception):
    """A session or payment that is not one of our orders (or not yours)."""


# --- Checkout ---------------------------------------------------------------------------


def checkout_start(*, user, pack: CreditPack, success_url: str, cancel_url: str) -> str:
    """Create the order and its Checkout Session; return the URL to send the person to."""
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
    Order.objects.filter(id=order.id).update(checkout_session_id=session.id)
    return session.url


def checkout_fulfil(*, session_id: str, user=None) -> Order:
    """Fulfil from the success page (user given: must own the order) or the
    webhook. Safe to call any number of times, concurrently too."""
    if user is not None and not Order.objects.filter(checkout_session_id=session_id, user=user).exists():
        raise UnknownOrder(session_id)
    return _fulfil_session(_retrieve_session(session_id))


# --- Webhook events -------------------------------------------------------------------


def stripe_event_apply(*, event: dict) -> str:
    """Store the (verified) event once and apply it; all in one transaction."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                stored = StripeEvent.objects.create(id=event["id"], type=event["type"], payload=event)
        except IntegrityError:
            return "duplicate"
        handler = _HANDLERS.get(event["type"])
        if handler is None:
            return "ignored"
        order = handler(event["data"]["object"])
        _record(stored, order)
        return "applied" if order is not None else "ignored"


def _record(stored: StripeEvent, order: Order | None) -> None:
    if order is not None:
        stored.order = order
        stored.save(update_fields=["order"])


def _on_session_paid_or_completed(session: dict) -> Order | None:
    try:
        return _fulfil_session(_retrieve_session(session["id"]))
    except UnknownOrder:
        return None


def _on_async_payment_failed(session: dict) -> Order | None:
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(checkout_session_id=session["id"]).first()
        if order is not None and order.status == Status.PENDING:
            order.status = Status.FAILED
            order.save(update_fields=["status"])
        return order


def _on_charge_refunded(charge: dict) -> Order | None:
    order = _order_for_payment(charge.get("payment_intent"))
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


def _on_dispute_created(dispute: dict) -> Order | None:
    order = _order_for_payment(dispute.get("payment_intent"))
    if order is None:
        return None
    with transaction.atomic():
        Order.objects.filter(id=order.id).update(status=Status.DISPUTED)
        if order.user is not None:
            account_freeze(user=order.user, frozen=True)
    return order


def _on_dispute_closed(dispute: dict) -> Order | None:
    order = _order_for_payment(dispute.get("payment_intent"))
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
        else:
            order.status = (
                Status.PAID
                if order.amount_refunded_cents == 0
                else Status.REFUNDED
                if order.amount_refunded_cents >= order.amount_cents
                else Status.PARTIALLY_REFUNDED
            )
        order.save()
        others = Order.objects.filter(user=order.user, status=Status.DISPUTED).exclude(id=order.id)
        if order.user is not None and not others.exists():
            account_freeze(user=order.user, frozen=False)
        return order


_HANDLERS = {
    "checkout.session.completed": _on_session_paid_or_completed,
    "checkout.session.async_payment_succeeded": _on_session_paid_or_completed,
    "checkout.session.async_payment_failed": _on_async_payment_failed,
    "charge.refunded": _on_charge_refunded,
    "charge.dispute.created": _on_dispute_created,
    "charge.dispute.closed": _on_dispute_closed,
}


# --- Staff -----------------------------------------------------------------------------


def order_refund(*, order: Order) -> str:
    """Refund what is left of an order through Stripe. The clawback happens
    when Stripe's charge.refunded webhook arrives, like any other refund."""
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
    session = client().v1.checkout.sessions.retrieve(session_id, params={"expand": ["line_items"]})
    return session.to_dict()


def _fulfil_session(session: dict) -> Order:
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(checkout_session_id=session["id"]).first()
        if order is None:
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


def _order_for_payment(payment_intent: str | None) -> Order | None:
    """Our order for a payment. A refund or dispute can arrive before the
    checkout events: then the session is found at Stripe and fulfilled
    first, so the end state is the same in any order."""
    if not payment_intent:
        return None
    order = Order.objects.filter(payment_intent_id=payment_intent).first()
    if order is not None:
        return order
    sessions = client().v1.checkout.sessions.list(params={"payment_intent": payment_intent, "limit": 1})
    for session in sessions.data:
        try:
            return _fulfil_session(_retrieve_session(session.id))
        except UnknownOrder:
            continue
    log.info("payment %s is not one of our orders; ignored", payment_intent)
    return None
