from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from billing.ledger import balance_of
from portal.support import VISITOR_COOKIE, conversation_for, unread_for_person


def site(request: HttpRequest) -> dict:
    """What every page's shell needs: the site name and the visitor's balance."""
    user = getattr(request, "user", None)
    credits = balance_of(user=user) if user is not None and user.is_authenticated else None
    conversation = conversation_for(user=user, visitor_token=request.COOKIES.get(VISITOR_COOKIE))
    return {
        "SITE_NAME": settings.SITE_NAME,
        "FREE_CREDITS": settings.FREE_CREDITS,
        "header_credits": credits,
        "support_unread": unread_for_person(conversation=conversation),
        "SUPPORT_HOURS": settings.SUPPORT_HOURS,
        "SUPPORT_REPLY_TIME": settings.SUPPORT_REPLY_TIME,
    }
