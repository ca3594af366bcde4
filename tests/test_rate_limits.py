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


# --- The client's address behind trusted proxies ------------------------------------------

PROXY = "10.0.0.7"


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # not a proxy of ours: the header is the client's lie
        (PROXY, "198.51.100.1", "198.51.100.1"),
        (PROXY, "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the left entry was written by the client
        (PROXY, "198.51.100.1, 10.0.0.8", "198.51.100.1"),  # two proxies of ours
        (PROXY, "not-an-ip, 10.0.0.8", "10.0.0.8"),
        (PROXY, None, PROXY),
        ("::ffff:10.0.0.7", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_the_client_address_is_the_right_most_one_no_trusted_proxy_wrote(settings, peer, forwarded, client):
    from portal.clientip import client_ip

    settings.TRUSTED_PROXIES = ("10.0.0.0/24",)
    assert client_ip(peer, forwarded) == client


def test_without_trusted_proxies_the_header_is_ignored(settings):
    from portal.clientip import client_ip, scope_with_client_ip

    settings.TRUSTED_PROXIES = ()
    assert client_ip(PROXY, "198.51.100.1") == PROXY
    scope = {"type": "websocket", "client": (PROXY, 5000), "headers": [(b"x-forwarded-for", b"198.51.100.1")]}
    assert scope_with_client_ip(scope)["client"] == (PROXY, 5000)


def test_a_websocket_scope_gets_the_client_behind_the_proxy(settings):
    from portal.clientip import scope_with_client_ip

    settings.TRUSTED_PROXIES = (PROXY,)
    scope = {"type": "websocket", "client": (PROXY, 5000), "headers": [(b"x-forwarded-for", b"198.51.100.1")]}
    assert scope_with_client_ip(scope)["client"] == ("198.51.100.1", 5000)


def fail_logins_as(client, count: int, **meta):
    """Failed logins for different addresses, so only the per-IP limit counts."""
    url = reverse("account_login")
    return [
        client.post(url, {"login": f"nobody{i}@example.com", "password": "wrong-password"}, **meta)
        for i in range(count)
    ][-1]


def test_two_clients_behind_a_trusted_proxy_are_throttled_separately(client, settings):
    settings.TRUSTED_PROXIES = (PROXY,)
    first = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "198.51.100.1"}
    assert TOO_MANY in fail_logins_as(client, 11, **first).content.decode()
    second = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "198.51.100.2"}
    assert TOO_MANY not in fail_logins_as(client, 1, **second).content.decode()


def test_a_forwarded_for_header_from_an_untrusted_peer_does_not_dodge_the_throttle(client, settings):
    settings.TRUSTED_PROXIES = (PROXY,)
    url = reverse("account_login")
    for i in range(11):
        response = client.post(
            url,
            {"login": f"nobody{i}@example.com", "password": "wrong-password"},
            REMOTE_ADDR="203.0.113.9",
            HTTP_X_FORWARDED_FOR=f"198.51.100.{i}",
        )
    assert TOO_MANY in response.content.decode()


def chat_post(client, n: int, **meta):
    return client.post(reverse("support_messages"), {"body": f"hello {n}", "client_id": f"c{n}"}, **meta)


def test_the_chat_limits_each_client_behind_the_proxy_by_its_own_address(settings):
    from django.test import Client

    settings.TRUSTED_PROXIES = (PROXY,)
    settings.CHAT_IP_RATE_LIMIT = "2/m"
    settings.CHAT_NEW_CONVERSATION_RATE_LIMIT = "100/h"
    behind = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "198.51.100.1"}
    codes = [chat_post(Client(), n, **behind).status_code for n in range(3)]
    assert codes == [200, 200, 429]
    other = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "198.51.100.2"}
    assert chat_post(Client(), 9, **other).status_code == 200


def test_the_chat_ignores_a_forwarded_for_header_from_an_untrusted_peer(settings):
    from django.test import Client

    settings.TRUSTED_PROXIES = (PROXY,)
    settings.CHAT_IP_RATE_LIMIT = "2/m"
    settings.CHAT_NEW_CONVERSATION_RATE_LIMIT = "100/h"
    codes = [
        chat_post(Client(), n, REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code
        for n in range(3)
    ]
    assert codes == [200, 200, 429]
