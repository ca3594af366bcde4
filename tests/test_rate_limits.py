"""allauth's rate limits, counted in the real Redis cache, also for the admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db
TOO_MANY = "Too many failed login attempts"


def fail_login(client, email: str):
    return client.post(reverse("account_login"), {"login": email, "password": "wrong-password"})


def test_repeated_failed_logins_are_throttled(client, alice):
    for _ in range(5):
        response = fail_login(client, alice.email)
        assert TOO_MANY not in response.content.decode()
    response = fail_login(client, alice.email)
    assert TOO_MANY in response.content.decode()
    # Even the right password is refused while throttled.
    response = client.post(reverse("account_login"), {"login": alice.email, "password": "correct horse 42"})
    assert TOO_MANY in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_throttle_counts_in_the_shared_cache(client, alice, settings):
    from django.core.cache import cache

    fail_login(client, alice.email)
    client_keys = list(cache._cache.get_client().scan_iter(match=f"{settings.CACHES['default']['KEY_PREFIX']}:*"))
    assert client_keys, "the failed login left no counter in Redis"


def test_the_admin_login_goes_through_the_throttled_login(client, charlie):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    for _ in range(6):
        response = fail_login(client, charlie.email)
    assert TOO_MANY in response.content.decode()


def test_a_signed_in_staff_member_reaches_the_admin(client, charlie):
    client.force_login(charlie)
    assert client.get("/admin/").status_code == 200


def test_a_signed_in_non_staff_person_does_not_reach_the_admin(client, alice):
    client.force_login(alice)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "login" in response["Location"]
