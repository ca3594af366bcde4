"""allauth tells us when an address is verified (or, with verification off,
when someone signs up); these thin receivers hand over to the service."""

from __future__ import annotations

from allauth.account.signals import email_confirmed, user_signed_up
from django.conf import settings
from django.dispatch import receiver

from accounts.services import free_credits_grant


@receiver(email_confirmed)
def grant_on_email_confirmed(sender, request, email_address, **kwargs) -> None:
    free_credits_grant(user=email_address.user, email=email_address.email)


@receiver(user_signed_up)
def grant_on_signup_without_verification(sender, request, user, **kwargs) -> None:
    if settings.ACCOUNT_EMAIL_VERIFICATION == "none" and user.email:
        free_credits_grant(user=user, email=user.email)
