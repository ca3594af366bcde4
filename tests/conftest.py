from __future__ import annotations

import os

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.cache import cache
from django.db import connection

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def make_user(email: str, *, staff: bool = False, superuser: bool = False, password: str = "correct horse 42"):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(
        username=email.split("@")[0], email=email, password=password, is_staff=staff, is_superuser=superuser
    )
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


@pytest.fixture
def alice(db):
    return make_user("alice@example.com")


@pytest.fixture
def bob(db):
    return make_user("bob@example.com")


@pytest.fixture
def charlie(db):
    """Staff, with every permission (a superuser)."""
    return make_user("charlie@example.com", staff=True, superuser=True)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clean_cache():
    """Rate-limit counters live in the real Redis cache: start each test
    clean. Deletes only this run's prefix, never the whole database (the
    broker shares it)."""
    client = cache._cache.get_client(write=True)
    pattern = f"{settings.CACHES['default']['KEY_PREFIX']}:*"
    for key in client.scan_iter(match=pattern, count=500):
        client.delete(key)
    yield


@pytest.fixture(autouse=True)
def _postgres_only(request):
    """Tests marked `postgres` need real row locks. Locally on SQLite they
    skip with a reason; in CI that would hide a gap, so they fail instead."""
    if request.node.get_closest_marker("postgres") is None:
        return
    if connection.vendor != "postgresql":
        message = f"needs PostgreSQL (DATABASE_URL), running on {connection.vendor}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
