"""Who an anonymous visitor is: a random token, signed, in a cookie. Only
its hash is stored, on their conversation, and in the browser session that
started it: the thread moves to an account at sign-in only from that
session (support.services.conversation_claim), and the cookie is dropped at
sign-in and sign-out (support.middleware), so the next person to sign in on
the same browser does not inherit it."""

from __future__ import annotations

import hashlib
import secrets

from django.core import signing
from django.http import HttpResponse

VISITOR_COOKIE = "support_visitor"
VISITOR_SESSION_KEY = "support_visitor_hash"
# Set on a request whose response must drop the visitor cookie.
FORGET_VISITOR = "support_forget_visitor"
_SALT = "support-visitor"
_MAX_AGE = 180 * 86400


def visitor_token_new() -> str:
    return signing.dumps(secrets.token_urlsafe(24), salt=_SALT)


def visitor_hash(token: str | None) -> str | None:
    """The stored form of a visitor's token; None when it is missing or forged."""
    if not token:
        return None
    try:
        raw = signing.loads(token, salt=_SALT)
    except signing.BadSignature:
        return None
    return hashlib.sha256(raw.encode()).hexdigest()


def visitor_cookie_set(response: HttpResponse, token: str, *, secure: bool) -> None:
    response.set_cookie(VISITOR_COOKIE, token, max_age=_MAX_AGE, httponly=True, samesite="Lax", secure=secure)


def visitor_cookie_clear(response: HttpResponse) -> None:
    response.delete_cookie(VISITOR_COOKIE, samesite="Lax")
