"""A visitor's support conversation follows them into their account."""

from __future__ import annotations

from allauth.account.signals import user_logged_in
from django.dispatch import receiver

from support.services import conversation_claim
from support.visitors import VISITOR_COOKIE


@receiver(user_logged_in)
def claim_visitor_conversation(sender, request, user, **kwargs) -> None:
    if request is not None:
        conversation_claim(user=user, visitor_token=request.COOKIES.get(VISITOR_COOKIE))
