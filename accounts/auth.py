"""API authentication: `Authorization: Bearer <api key>` (no CSRF: a key is
not sent by browsers on their own), else the browser session (CSRF checked
on unsafe methods by django-ninja's SessionAuth)."""

from __future__ import annotations

from ninja.security import HttpBearer, django_auth

from accounts.services import api_key_user


class ApiKeyAuth(HttpBearer):
    def authenticate(self, request, token: str):
        user = api_key_user(secret=token)
        if user is not None:
            request.user = user
        return user


API_AUTH = [ApiKeyAuth(), django_auth]
