"""A visitor's support conversation follows them into their account when
they sign in from the browser session that started it; the visitor cookie
is dropped at sign-in and sign-out (support.middleware sees the mark)."""

from __future__ import annotations

from allauth.account.signals import user_logged_in
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

from support.services import conversation_claim
from support.visitors import FORGET_VISITOR, VISITOR_COOKIE, VISITOR_SESSION_KEY


@receiver(user_logged_in)
def claim_visitor_conversation(sender, request, user, **kwargs) -> None:
    if request is None:
        return
    session_hash = request.session.pop(VISITOR_SESSION_KEY, None)
    conversation_claim(user=user, visitor_token=request.COOKIES.get(VISITOR_COOKIE), session_hash=session_hash)
    setattr(request, FORGET_VISITOR, True)


@receiver(user_logged_out)
def forget_visitor(sender, request, user, **kwargs) -> None:
    if request is not None:
        setattr(request, FORGET_VISITOR, True)
