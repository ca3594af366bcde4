from __future__ import annotations

import logging

import stripe
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from billing.models import CreditPack
from billing.purchases import UnknownOrder, checkout_fulfil, checkout_start, stripe_event_apply
from billing.selectors import balance_of, orders_of
from billing.stripe_api import payments_enabled, verify_event

log = logging.getLogger(__name__)


@login_required
@require_POST
def buy(request: HttpRequest, pack_id: int) -> HttpResponse:
    if not payments_enabled():
        messages.error(request, "Payments are not set up on this site yet.")
        return redirect("pricing")
    pack = get_object_or_404(CreditPack, id=pack_id, active=True)
    try:
        url = checkout_start(
            user=request.user,
            pack=pack,
            success_url=request.build_absolute_uri(reverse("billing_success")),
            cancel_url=request.build_absolute_uri(reverse("billing_cancel")),
        )
    except stripe.StripeError:
        log.exception("could not create a Checkout Session")
        return _payments_unavailable(request, paid_maybe=False)
    return redirect(url)


@login_required
@require_GET
def success(request: HttpRequest) -> HttpResponse:
    session_id = request.GET.get("session_id", "")
    try:
        order = checkout_fulfil(session_id=session_id, user=request.user)
    except UnknownOrder:
        raise Http404 from None
    except stripe.StripeError:
        log.exception("could not confirm Checkout Session %s", session_id)
        return _payments_unavailable(request, paid_maybe=True)
    return render(request, "billing/success.html", {"order": order, "balance": balance_of(user=request.user)})


@require_GET
def cancel(request: HttpRequest) -> HttpResponse:
    messages.info(request, "Payment canceled; nothing was charged.")
    return redirect("pricing")


@login_required
@require_GET
def purchases(request: HttpRequest) -> HttpResponse:
    return render(request, "billing/purchases.html", {"orders": orders_of(user=request.user)})


@csrf_exempt  # Stripe signs the body instead (verified below)
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    if not payments_enabled():
        return HttpResponseBadRequest("payments are not set up")
    try:
        event = verify_event(request.body, request.headers.get("Stripe-Signature"))
    except (ValueError, stripe.SignatureVerificationError):
        return HttpResponseBadRequest("invalid payload or signature")
    try:
        outcome = stripe_event_apply(event=event)
    except stripe.StripeError:
        # Stripe could not be asked (outage); nothing was written. A non-2xx
        # makes Stripe deliver the event again later.
        log.exception("webhook %s (%s): Stripe unreachable", event.get("id"), event.get("type"))
        return _error("payments_unavailable", "Stripe could not be reached; deliver again later.", status=503)
    except Exception:
        # Everything rolled back; a non-2xx makes Stripe deliver it again.
        log.exception("webhook %s (%s) failed", event.get("id"), event.get("type"))
        return _error("handler_failed", "The event could not be applied; deliver again later.", status=500)
    return JsonResponse({"received": True, "outcome": outcome})


def _error(code: str, message: str, *, status: int) -> JsonResponse:
    """The project's JSON error shape (DESIGN.md, "Public contracts")."""
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _payments_unavailable(request: HttpRequest, *, paid_maybe: bool) -> HttpResponse:
    """Stripe is down or slow: say so plainly, with 503, never a 500."""
    return render(request, "billing/unavailable.html", {"paid_maybe": paid_maybe}, status=503)
