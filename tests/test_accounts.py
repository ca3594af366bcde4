"""Sign-up, email verification, the free credits, the account page."""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

from accounts.services import email_fingerprint, free_credits_grant
from billing.ledger import credits_grant
from billing.models import LedgerEntry
from billing.selectors import balance_of

pytestmark = pytest.mark.django_db
PASSWORD = "a-long-unusual-passphrase-77"


def sign_up(client, email: str):
    return client.post(
        reverse("account_signup"),
        {"email": email, "password1": PASSWORD, "password2": PASSWORD},
    )


def confirm_from_mail(client) -> None:
    body = mail.outbox[-1].body
    url = re.search(r"https?://[^/\s]+(/accounts/confirm-email/[^\s]+/)", body).group(1)
    assert client.get(url).status_code == 200
    assert client.post(url).status_code == 302


def header_credits(html: str) -> int:
    match = re.search(r'data-testid="header-credits"[^>]*>\s*<span class="credits-count">(\d+)</span>', html)
    assert match, "no credit balance in the header"
    return int(match.group(1))


def test_sign_up_grants_ten_credits_once_on_verification_and_the_header_shows_them(client):
    response = sign_up(client, "dana@example.com")
    assert response.status_code == 302
    user = get_user_model().objects.get(email="dana@example.com")
    assert balance_of(user=user) == 0, "no credits before the address is verified"
    assert len(mail.outbox) == 1

    confirm_from_mail(client)
    assert balance_of(user=user) == 10
    home = client.get(reverse("home"))
    assert header_credits(home.content.decode()) == 10

    # Confirming again (an old link, a second click) grants nothing more.
    address = EmailAddress.objects.get(email="dana@example.com")
    assert free_credits_grant(user=user, email=address.email) is None
    assert LedgerEntry.objects.filter(account__user=user, kind="grant").count() == 1
    assert balance_of(user=user) == 10


def test_an_unverified_account_cannot_sign_in_and_has_no_credits(client):
    sign_up(client, "erin@example.com")
    client.logout()
    response = client.post(reverse("account_login"), {"login": "erin@example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert "confirm-email" in response["Location"]
    assert balance_of(user=get_user_model().objects.get(email="erin@example.com")) == 0


def test_deleting_the_account_and_signing_up_again_does_not_grant_again(client):
    sign_up(client, "frank@example.com")
    confirm_from_mail(client)
    get_user_model().objects.get(email="frank@example.com").delete()
    client.logout()

    sign_up(client, "Frank+again@Example.com")  # same mailbox, other spelling
    confirm_from_mail(client)
    again = get_user_model().objects.get(email__iexact="frank+again@example.com")
    assert balance_of(user=again) == 0
    assert not LedgerEntry.objects.filter(account__user=again).exists()


def test_a_second_verified_address_on_the_same_user_does_not_grant_again(alice):
    assert free_credits_grant(user=alice, email="alice@example.com").amount == 10
    assert free_credits_grant(user=alice, email="alice.other@example.com") is None
    assert balance_of(user=alice) == 10


def test_with_verification_off_credits_arrive_at_sign_up(client, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "none"
    sign_up(client, "gina@example.com")
    assert balance_of(user=get_user_model().objects.get(email="gina@example.com")) == 10


def test_free_credits_follow_the_setting(alice, settings):
    settings.FREE_CREDITS = 25
    free_credits_grant(user=alice, email=alice.email)
    assert balance_of(user=alice) == 25
    settings.FREE_CREDITS = 0
    assert free_credits_grant(user=alice, email="new@example.com") is None


def test_email_fingerprint_ignores_case_and_plus_tags():
    assert email_fingerprint("Bob+promo@Example.COM ") == email_fingerprint("bob@example.com")
    assert email_fingerprint("bob@example.com") != email_fingerprint("bob@example.org")


@pytest.mark.parametrize(
    "spelling",
    ["j.smith@gmail.com", "JSmith+free@Gmail.com", "j.s.m.i.t.h+x@googlemail.com", "jsmith@googlemail.com."],
)
def test_email_fingerprint_folds_gmail_dots_and_googlemail(spelling):
    assert email_fingerprint(spelling) == email_fingerprint("jsmith@gmail.com")


def test_email_fingerprint_keeps_dots_where_they_make_another_mailbox():
    assert email_fingerprint("j.smith@example.com") != email_fingerprint("jsmith@example.com")
    assert email_fingerprint("jane@proton.me") == email_fingerprint("Jane+x@protonmail.com")


def test_one_gmail_mailbox_gets_the_free_credits_once(alice, bob):
    assert free_credits_grant(user=alice, email="jane.doe@gmail.com") is not None
    assert free_credits_grant(user=bob, email="janedoe+again@googlemail.com") is None
    assert balance_of(user=bob) == 0


def test_a_claim_stored_before_the_folding_still_counts(alice):
    from accounts.models import FreeCreditClaim
    from accounts.services import _legacy_fingerprint

    FreeCreditClaim.objects.create(email_hash=_legacy_fingerprint("jane.doe@gmail.com"))
    assert free_credits_grant(user=alice, email="jane.doe@gmail.com") is None


def test_the_account_page_needs_a_login(client):
    response = client.get(reverse("account"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_the_account_page_shows_the_ledger_newest_first_paginated(client, alice):
    for i in range(30):
        credits_grant(user=alice, amount=1, ref=f"g:{i}", memo=f"gift number {i}")
    client.force_login(alice)
    first = client.get(reverse("account")).content.decode()
    assert "30 credits" in first
    assert first.index("gift number 29") < first.index("gift number 28")
    assert "gift number 4" not in first  # 25 a page: 29..5 here
    second = client.get(reverse("account"), {"page": 2}).content.decode()
    assert "gift number 4" in second and "gift number 29" not in second


def test_the_account_page_shows_only_your_own_ledger(client, alice, bob):
    credits_grant(user=bob, amount=7, ref="g:bob", memo="bob's secret gift")
    client.force_login(alice)
    html = client.get(reverse("account")).content.decode()
    assert "bob&#x27;s secret gift" not in html and "bob's secret gift" not in html
    assert "0 credits" in html


def test_an_account_in_debt_sees_why_and_how_to_clear_it(client, alice):
    from billing.ledger import credits_capture, credits_hold, credits_reverse

    credits_grant(user=alice, amount=10, ref="stripe:cs_1", kind=LedgerEntry.Kind.PURCHASE, memo="Small pack")
    credits_hold(user=alice, amount=7, ref="h")
    credits_capture(hold_ref="h", ref="c")
    credits_reverse(entry_ref="stripe:cs_1", ref="refund:1", memo="Refund of 10.00 USD")
    client.force_login(alice)
    html = client.get(reverse("account")).content.decode()
    assert 'data-testid="debt"' in html and "You owe 7 credits" in html
    assert "Refund of 10.00 USD, 7 credits already spent" in html  # why
    assert reverse("pricing") in html and "pay the debt first" in html  # how to clear it
    credits_grant(user=alice, amount=10, ref="stripe:cs_2", kind=LedgerEntry.Kind.PURCHASE, memo="Small pack")
    html = client.get(reverse("account")).content.decode()
    assert 'data-testid="debt"' not in html and 'data-testid="balance">3 credits' in html
    assert "(7 paid your debt)" in html


def test_a_disputed_payment_says_spending_is_paused(client, alice):
    from billing.ledger import account_freeze

    credits_grant(user=alice, amount=10, ref="g")
    account_freeze(user=alice, frozen=True)
    client.force_login(alice)
    html = client.get(reverse("account")).content.decode()
    assert 'data-testid="frozen"' in html and "disputed" in html and 'data-testid="debt"' not in html


def test_ensure_staff_writes_the_password_owner_only_and_prints_it_the_first_time_only(settings, tmp_path):
    import io
    import stat

    from django.core.management import call_command

    settings.VAR_DIR = tmp_path / "var"
    first, second = io.StringIO(), io.StringIO()
    call_command("ensure_staff", stdout=first)
    path = settings.VAR_DIR / "staff-login.txt"
    email, password = path.read_text().split()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert password in first.getvalue()
    call_command("ensure_staff", stdout=second)
    assert password not in second.getvalue() and str(path) in second.getvalue()
    assert get_user_model().objects.get(email=email).check_password(password)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_ensure_staff_never_makes_the_password_file_readable_by_others(settings, tmp_path, monkeypatch):
    """The mode is set when the file is created, before the secret goes in:
    a umask of 0 (every file world-readable) changes nothing."""
    import io
    import os
    import stat

    from django.core.management import call_command

    settings.VAR_DIR = tmp_path / "var"
    modes = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        if str(path).endswith("staff-login.txt"):
            modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return fd

    old = os.umask(0)
    try:
        monkeypatch.setattr(os, "open", spy)
        call_command("ensure_staff", stdout=io.StringIO())
    finally:
        os.umask(old)
    assert modes == [0o600]
