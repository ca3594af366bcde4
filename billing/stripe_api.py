"""The Stripe client, configured from settings (STRIPE_API_BASE points it at
another server, e.g. the tests' fake on loopback)."""

from __future__ import annotations

import stripe
from django.conf import settings


def payments_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET)


def client() -> stripe.StripeClient:
    bases = {"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else {}
    return stripe.StripeClient(settings.STRIPE_SECRET_KEY, base_addresses=bases, max_network_retries=2)


def verify_event(payload: bytes, signature: str | None) -> dict:
    """The event if the signature (and its 300 s tolerance) checks out; raises
    ValueError or stripe.SignatureVerificationError otherwise."""
    event = stripe.Webhook.construct_event(payload, signature, settings.STRIPE_WEBHOOK_SECRET, tolerance=300)
    return event.to_dict()
