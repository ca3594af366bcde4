"""The site shell and the home page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing.ledger import credits_grant

pytestmark = pytest.mark.django_db


def test_the_home_page_explains_img2img_to_a_newcomer(client):
    html = client.get(reverse("home")).content.decode()
    for text in [
        "0.1–0.4",  # strength: subtle
        "0.6–0.9",  # strength: dramatic
        "1.0",
        "30–50",  # steps
        "80",
        "3–7",  # guidance: creative
        "10–15",  # guidance: strict
        "Sketch to photo",
        "Photo to a style",
        "Iterative refinement",
        "txt2img",
        "Inpainting",
        "ControlNet",
        "Start free with 10 credits",
        "no subscription",
    ]:
        assert text.lower() in html.lower(), text
    assert reverse("account_signup") in html


def test_the_shell_is_accessible(client):
    html = client.get(reverse("home")).content.decode()
    assert '<html lang="en">' in html
    assert 'href="#main"' in html and 'id="main"' in html
    assert '<nav aria-label="Main">' in html
    assert 'name="viewport"' in html


def test_the_header_shows_the_balance_to_a_signed_in_person(client, alice):
    credits_grant(user=alice, amount=7, ref="g")
    client.force_login(alice)
    html = client.get(reverse("home")).content.decode()
    assert '<span class="credits-count">7</span> credits' in html
    assert "Sign out" in html


def test_allauth_pages_use_the_site_layout(client):
    for name in ["account_signup", "account_login", "account_reset_password"]:
        html = client.get(reverse(name)).content.decode()
        assert 'class="site-header"' in html, name
        assert 'class="wrap auth"' in html, name


def test_sign_out_is_a_csrf_protected_post(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("account_logout"))
    assert response.status_code == 403
    assert "_auth_user_id" in client.session


def test_healthz_answers(client):
    assert client.get(reverse("healthz")).json() == {"status": "ok"}
