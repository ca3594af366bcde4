from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from billing.selectors import balance_of


def site(request: HttpRequest) -> dict:
    """What every page's shell needs: the site name and the visitor's balance."""
    user = getattr(request, "user", None)
    return {
        "SITE_NAME": settings.SITE_NAME,
        "FREE_CREDITS": settings.FREE_CREDITS,
        "header_credits": balance_of(user=user) if user is not None and user.is_authenticated else None,
    }
