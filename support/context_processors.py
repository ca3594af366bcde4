from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from support.selectors import unread_for_person
from support.visitors import VISITOR_COOKIE


def widget(request: HttpRequest) -> dict:
    """What the chat widget on every page needs: the unread badge (one
    query) and what support promises."""
    return {
        "support_unread": unread_for_person(
            user=getattr(request, "user", None), visitor_token=request.COOKIES.get(VISITOR_COOKIE)
        ),
        "SUPPORT_HOURS": settings.SUPPORT_HOURS,
        "SUPPORT_REPLY_TIME": settings.SUPPORT_REPLY_TIME,
    }
