"""allauth tells us when an address is verified (or, with verification off,
when someone signs up); these thin receivers hand over to the service."""

from __future__ import annotations

from allauth.account.signals import email_confirmed, user_signed_up
from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.models import ApiKey, User
from accounts.services import api_keys_uncache, free_credits_grant


@receiver(email_confirmed)
def grant_on_email_confirmed(sender, request, email_address, **kwargs) -> None:
    free_credits_grant(user=email_address.user, email=email_address.email)


@receiver(user_signed_up)
def grant_on_signup_without_verification(sender, request, user, **kwargs) -> None:
    if settings.ACCOUNT_EMAIL_VERIFICATION == "none" and user.email:
        free_credits_grant(user=user, email=user.email)


# An API key's cache entry (accounts.services.KEY_CACHE_PREFIX) is marked as
# no longer honoured the moment the key stops being honoured, however that
# happens: revoked in the admin, deleted (with its owner too), or its owner
# deactivated.


@receiver(post_save, sender=ApiKey)
def uncache_a_revoked_key(sender, instance: ApiKey, **kwargs) -> None:
    if instance.revoked_at is not None:
        api_keys_uncache([instance.key_hash])


@receiver(post_delete, sender=ApiKey)
def uncache_a_deleted_key(sender, instance: ApiKey, **kwargs) -> None:
    api_keys_uncache([instance.key_hash])


@receiver(post_save, sender=User)
def uncache_an_inactive_person_s_keys(sender, instance: User, **kwargs) -> None:
    if not instance.is_active:
        api_keys_uncache(ApiKey.objects.filter(user=instance).values_list("key_hash", flat=True))
