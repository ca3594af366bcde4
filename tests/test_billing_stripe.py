"""Buying credits: Checkout against a fake Stripe API on loopback, webhooks
signed with the stripe library's own helper; every rule under retries,
races and replays."""

from __future__ import annotations

import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from billing.errors import SpendingBlocked
from billing.ledger import credits_capture, credits_hold
from billing.models import CreditAccount, CreditPack, LedgerEntry, Order, StripeEvent
from billing.selectors import balance_of
from tests.fake_stripe import FakeStripe
from tests.helpers import api_client, png_bytes, run_in_threads

SECRET = "whsec_test_secret"
WEBHOOK = "/billing/stripe/webhook/"


@pytest.fixture(scope="session")
def fake_stripe():
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def stripe_on(settings, fake_stripe):
    settings.STRIPE_SECRET_KEY = "sk_test_fake"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_fake"
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    settings.STRIPE_API_BASE = fake_stripe.url
    return fake_stripe


@pytest.fixture
def pack(db):
    return CreditPack.objects.create(name="Test pack", credits=100, price_cents=1000, currency="usd")


def buy(client, user, pack, fake) -> str:
    client.force_login(user)
    response = client.post(reverse("billing_buy", args=[pack.id]))
    assert response.status_code == 302 and response["Location"].startswith("https://checkout.stripe.test/pay/")
    return response["Location"].rsplit("/", 1)[1]


def deliver(
    event: dict,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    body: str | None = None,
    signature: str | None = "sign",
):
    payload = json.dumps(event)
    headers = {}
    if signature == "sign":
        headers["HTTP_STRIPE_SIGNATURE"] = FakeStripe.sign(payload, secret, timestamp=timestamp)
    return Client().post(
        WEBHOOK, data=body if body is not None else payload, content_type="application/json", **headers
    )


def grants(user) -> int:
    return LedgerEntry.objects.filter(account__user=user, kind="purchase").count()


# --- Pages -------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_stripe_keys_the_pricing_page_says_payments_are_not_set_up(client, pack, settings):
    settings.STRIPE_SECRET_KEY = ""
    html = client.get(reverse("pricing")).content.decode()
    assert "Payments are not set up" in html and "Test pack" in html and "no subscription" in html
    assert "Buy Test pack" not in html


@pytest.mark.django_db
def test_the_pricing_page_offers_packs_and_typical_costs(client, alice, pack, stripe_on):
    from catalog.seeds import catalog_seed

    catalog_seed()
    client.force_login(alice)
    html = client.get(reverse("pricing")).content.decode()
    assert "Buy Test pack" in html and "10.00 USD" in html and "SDXL 1.0" in html


@pytest.mark.django_db
def test_checkout_is_created_with_an_idempotency_key_and_tied_to_the_user(client, alice, pack, stripe_on):
    session_id = buy(client, alice, pack, stripe_on)
    order = Order.objects.get(checkout_session_id=session_id)
    session = stripe_on.sessions[session_id]
    assert (order.user, order.credits, order.amount_cents, order.status) == (alice, 100, 1000, "pending")
    assert session["metadata"] == {"order_id": str(order.id), "user_id": str(alice.pk), "pack_id": str(pack.pk)}
    assert session["client_reference_id"] == str(order.id) and session["mode"] == "payment"
    assert ("POST", f"checkout:{order.id}") in stripe_on.idempotent


@pytest.mark.django_db
def test_the_success_page_fulfils_when_the_webhook_is_late(client, alice, pack, stripe_on):
    session_id = buy(client, alice, pack, stripe_on)
    stripe_on.pay(session_id)
    html = client.get(reverse("billing_success"), {"session_id": session_id}).content.decode()
    assert "100 credits were added" in html and 'data-testid="balance">100 credits' in html
    client.get(reverse("billing_success"), {"session_id": session_id})  # a reload grants nothing more
    assert balance_of(user=alice) == 100 and grants(alice) == 1


@pytest.mark.django_db
def test_someone_elses_success_page_is_404(client, alice, bob, pack, stripe_on):
    session_id = buy(client, alice, pack, stripe_on)
    stripe_on.pay(session_id)
    client.force_login(bob)
    assert client.get(reverse("billing_success"), {"session_id": session_id}).status_code == 404
    assert balance_of(user=alice) == 0 and balance_of(user=bob) == 0


# --- Webhooks: signatures, replays, races ---------------------------------------------


@pytest.mark.django_db
def test_the_same_completed_event_five_times_grants_once(client, alice, pack, stripe_on):
    session_id = buy(client, alice, pack, stripe_on)
    event = stripe_on.event("checkout.session.completed", stripe_on.pay(session_id))
    outcomes = [deliver(event).json()["outcome"] for _ in range(5)]
    assert outcomes == ["applied"] + ["duplicate"] * 4
    assert balance_of(user=alice) == 100 and grants(alice) == 1
    assert Order.objects.get(checkout_session_id=session_id).status == "paid"
    # Another event about the same session (a different id) still grants nothing more.
    deliver(stripe_on.event("checkout.session.async_payment_succeeded", stripe_on.sessions[session_id]))
    assert grants(alice) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_event_delivered_five_times_at_once_grants_once(client, alice, pack, stripe_on):
    session_id = buy(client, alice, pack, stripe_on)
    event = stripe_on.event("checkout.session.completed", stripe_on.pay(session_id))
    responses = run_in_threads(5, lambda i: deliver(event))
    assert all(getattr(r, "status_code", None) == 200 for r in responses), responses
    assert sorted(r.json()["outcome"] for r in responses) == ["applied"] + ["duplicate"] * 4
    assert balance_of(user=alice) == 100 and grants(alice) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_webhook_and_success_page_at_the_same_moment_grant_once(client, alice, pack, stripe_on):
    session_id = buy(client, alice, pack, stripe_on)
    event = stripe_on.event("checkout.session.completed", stripe_on.pay(session_id))

    def work(i: int):
        if i % 2:
            return deliver(event)
        page = Client()
        page.force_login(alice)
        return page.get(reverse("billing_success"), {"session_id": session_id})

    responses = run_in_threads(4, work)
    assert all(getattr(r, "status_code", None) == 200 for r in responses), responses
    assert balance_of(user=alice) == 100 and grants(alice) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("attack", ["tampered", "missing-header", "wrong-secret", "too-old"])
def test_bad_signatures_are_400_and_write_nothing(client, alice, pack, stripe_on, attack):
    session_id = buy(client, alice, pack, stripe_on)
    event = stripe_on.event("checkout.session.completed", stripe_on.pay(session_id))
    if attack == "tampered":
        signed = json.dumps(event)
        header = FakeStripe.sign(signed, SECRET)
        forged = signed.replace('"amount_total": 1000', '"amount_total": 1')
        response = Client().post(WEBHOOK, data=forged, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)
    elif attack == "missing-header":
        response = deliver(event, signature=None)
    elif attack == "wrong-secret":
        response = deliver(event, secret="whsec_someone_else")
    else:
        response = deliver(event, timestamp=int(time.time()) - 301)
    assert response.status_code == 400
    assert not StripeEvent.objects.exists() and balance_of(user=alice) == 0


@pytest.mark.django_db
def test_a_handler_that_fails_after_writing_rolls_back_and_the_retry_grants_once(
    client, alice, pack, stripe_on, monkeypatch
):
    import billing.purchases

    session_id = buy(client, alice, pack, stripe_on)
    event = stripe_on.event("checkout.session.completed", stripe_on.pay(session_id))
    original = billing.purchases._record
    calls = {"n": 0}

    def flaky(stored, order):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database went away after the grant")
        return original(stored, order)

    monkeypatch.setattr(billing.purchases, "_record", flaky)
    assert deliver(event).status_code == 500
    assert balance_of(user=alice) == 0 and not StripeEvent.objects.exists()  # the grant was rolled back
    assert deliver(event).json()["outcome"] == "applied"
    assert balance_of(user=alice) == 100 and grants(alice) == 1


# --- Delayed payment methods ------------------------------------------------------------


@pytest.mark.django_db
def test_delayed_payment_grants_only_when_it_succeeds(client, alice, pack, stripe_on):
    session_id = buy(client, alice, pack, stripe_on)
    unpaid = stripe_on.pay(session_id, paid=False)
    assert deliver(stripe_on.event("checkout.session.completed", unpaid)).status_code == 200
    assert balance_of(user=alice) == 0 and Order.objects.get(checkout_session_id=session_id).status == "pending"
    succeeded = stripe_on.pay(session_id)
    event = stripe_on.event("checkout.session.async_payment_succeeded", succeeded)
    deliver(event)
    deliver(event)
    assert balance_of(user=alice) == 100 and grants(alice) == 1


@pytest.mark.django_db
def test_a_completed_event_for_a_session_stripe_does_not_know_is_stored_and_ignored(client, alice, pack, stripe_on):
    from billing.models import StripeEvent

    session_id = buy(client, alice, pack, stripe_on)
    event = stripe_on.event("checkout.session.completed", stripe_on.pay(session_id))
    event["data"]["object"]["id"] = "cs_test_not_ours"  # a session of another account on this endpoint
    event["data"]["object"]["metadata"] = {}
    event["data"]["object"]["client_reference_id"] = None
    response = deliver(event)
    assert response.status_code == 200, response.content  # not a 500 that Stripe retries for days
    assert StripeEvent.objects.filter(id=event["id"]).exists()
    assert grants(alice) == 0


def test_a_failed_delayed_payment_grants_nothing(client, alice, pack, stripe_on):
    session_id = buy(client, alice, pack, stripe_on)
    deliver(stripe_on.event("checkout.session.completed", stripe_on.pay(session_id, paid=False)))
    deliver(stripe_on.event("checkout.session.async_payment_failed", stripe_on.sessions[session_id]))
    order = Order.objects.get(checkout_session_id=session_id)
    assert order.status == "failed" and balance_of(user=alice) == 0 and grants(alice) == 0


# --- Refunds -------------------------------------------------------------------------------


def paid(client, user, pack, fake) -> str:
    session_id = buy(client, user, pack, fake)
    deliver(fake.event("checkout.session.completed", fake.pay(session_id)))
    return session_id


@pytest.mark.django_db
def test_two_partial_refunds_each_redelivered_claw_back_twice(client, alice, pack, stripe_on):
    session_id = paid(client, alice, pack, stripe_on)
    first = stripe_on.event("charge.refunded", stripe_on.charge(session_id, amount_refunded=250))
    second = stripe_on.event("charge.refunded", stripe_on.charge(session_id, amount_refunded=600))
    for event in (first, first, second, second, first):
        assert deliver(event).status_code == 200
    reversals = list(
        LedgerEntry.objects.filter(account__user=alice, kind="reversal").order_by("id").values_list("amount", flat=True)
    )
    assert reversals == [-25, -35]
    order = Order.objects.get(checkout_session_id=session_id)
    assert (order.status, order.credits_clawed_back, balance_of(user=alice)) == ("partially_refunded", 60, 40)
    full = stripe_on.event("charge.refunded", stripe_on.charge(session_id, amount_refunded=1000))
    deliver(full)
    assert balance_of(user=alice) == 0 and Order.objects.get(id=order.id).status == "refunded"


@pytest.mark.django_db
def test_a_refund_after_the_credits_were_spent_records_debt_and_blocks_spending(client, alice, pack, stripe_on):
    session_id = paid(client, alice, pack, stripe_on)
    credits_hold(user=alice, amount=80, ref="hold:job:x")
    credits_capture(hold_ref="hold:job:x", ref="capture:job:x")
    deliver(stripe_on.event("charge.refunded", stripe_on.charge(session_id, amount_refunded=1000)))
    account = CreditAccount.objects.get(user=alice)
    assert (account.balance, account.debt) == (0, 80)
    with pytest.raises(SpendingBlocked):
        credits_hold(user=alice, amount=1, ref="hold:job:y")


@pytest.mark.django_db
def test_the_next_purchase_pays_the_debt_first_and_unblocks_spending(client, alice, pack, stripe_on):
    session_id = paid(client, alice, pack, stripe_on)
    credits_hold(user=alice, amount=80, ref="hold:job:x")
    credits_capture(hold_ref="hold:job:x", ref="capture:job:x")
    deliver(stripe_on.event("charge.refunded", stripe_on.charge(session_id, amount_refunded=1000)))
    second = paid(client, alice, pack, stripe_on)
    deliver(stripe_on.event("checkout.session.completed", stripe_on.sessions[second]))  # redelivered
    account = CreditAccount.objects.get(user=alice)
    assert (account.balance, account.debt) == (20, 0)
    purchase = LedgerEntry.objects.get(reference=f"stripe:{second}")
    assert (purchase.amount, purchase.debt_paid) == (20, 80)
    assert sum(LedgerEntry.objects.filter(account__user=alice).values_list("amount", flat=True)) == 20
    credits_hold(user=alice, amount=20, ref="hold:job:y")  # spending works again


@pytest.mark.django_db
def test_a_refund_before_the_completed_event_ends_consistent(client, alice, pack, stripe_on):
    session_id = buy(client, alice, pack, stripe_on)
    stripe_on.pay(session_id)
    deliver(stripe_on.event("charge.refunded", stripe_on.charge(session_id, amount_refunded=1000)))
    deliver(stripe_on.event("checkout.session.completed", stripe_on.sessions[session_id]))
    order = Order.objects.get(checkout_session_id=session_id)
    assert grants(alice) == 1 and balance_of(user=alice) == 0
    assert (order.status, order.credits_clawed_back) == ("refunded", 100)


@pytest.mark.django_db
def test_staff_refund_goes_through_stripe_and_the_webhook_claws_back(client, alice, charlie, pack, stripe_on):
    session_id = paid(client, alice, pack, stripe_on)
    order = Order.objects.get(checkout_session_id=session_id)
    staff = Client()
    staff.force_login(charlie)
    staff.post(reverse("admin:billing_order_changelist"), {"action": "refund", "_selected_action": [order.id]})
    assert stripe_on.refunds[-1]["payment_intent"] == order.payment_intent_id
    assert stripe_on.refunds[-1]["amount"] == 1000
    assert balance_of(user=alice) == 100  # nothing moves until Stripe confirms
    deliver(stripe_on.event("charge.refunded", stripe_on.charge(session_id, amount_refunded=1000)))
    assert balance_of(user=alice) == 0


def refund_as(user, order):
    from django.contrib.admin.models import LogEntry

    staff = Client()
    staff.force_login(user)
    staff.post(reverse("admin:billing_order_changelist"), {"action": "refund", "_selected_action": [order.id]})
    return LogEntry.objects.filter(user=user, object_id=str(order.id))


@pytest.mark.django_db
def test_refunds_need_the_refund_permission_not_just_staff_or_the_credits_one(client, alice, pack, stripe_on):
    from django.contrib.auth.models import Permission

    from tests.conftest import make_user

    order = Order.objects.get(checkout_session_id=paid(client, alice, pack, stripe_on))
    clerk = make_user("clerk@example.com", staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["view_order", "adjust_credits"]))
    refunds = len(stripe_on.refunds)
    assert not refund_as(clerk, order).exists()
    assert len(stripe_on.refunds) == refunds and balance_of(user=alice) == 100


@pytest.mark.django_db
def test_a_refund_by_staff_with_the_permission_is_written_to_the_admin_log(client, alice, pack, stripe_on):
    from django.contrib.auth.models import Permission

    from tests.conftest import make_user

    session_id = paid(client, alice, pack, stripe_on)
    order = Order.objects.get(checkout_session_id=session_id)
    refunder = make_user("refunder@example.com", staff=True)
    refunder.user_permissions.add(*Permission.objects.filter(codename__in=["view_order", "refund_order"]))
    log = refund_as(refunder, order).get()
    assert stripe_on.refunds[-1]["payment_intent"] == order.payment_intent_id
    assert stripe_on.refunds[-1]["id"] in log.change_message
    deliver(stripe_on.event("charge.refunded", stripe_on.charge(session_id, amount_refunded=1000)))
    assert balance_of(user=alice) == 0 and LedgerEntry.objects.filter(account__user=alice, kind="reversal").count() == 1


# --- Disputes ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_dispute_freezes_spending_until_won(client, alice, pack, stripe_on, gpu_worker, test_checkpoints):
    from catalog.seeds import catalog_register_test_checkpoints

    catalog_register_test_checkpoints(test_checkpoints.values())
    session_id = paid(client, alice, pack, stripe_on)
    dispute = stripe_on.dispute(session_id)
    deliver(stripe_on.event("charge.dispute.created", dispute))
    api = api_client(alice)
    response = api.post(
        "/api/v1/img2img",
        {
            "model": "test-sd1",
            "prompt": "x",
            "steps": 4,
            "strength": 0.5,
            "image": SimpleUploadedFile("a.png", png_bytes()),
        },
    )
    assert response.status_code == 402 and response.json()["error"]["code"] == "account_blocked"
    assert Order.objects.get(checkout_session_id=session_id).status == "disputed"
    deliver(stripe_on.event("charge.dispute.closed", {**dispute, "status": "won"}))
    credits_hold(user=alice, amount=1, ref="hold:after-win")
    assert Order.objects.get(checkout_session_id=session_id).status == "paid"


@pytest.mark.django_db
def test_a_lost_dispute_claws_back_once(client, alice, pack, stripe_on):
    session_id = paid(client, alice, pack, stripe_on)
    dispute = stripe_on.dispute(session_id)
    deliver(stripe_on.event("charge.dispute.created", dispute))
    closed = stripe_on.event("charge.dispute.closed", {**dispute, "status": "lost"})
    deliver(closed)
    deliver(closed)
    deliver(stripe_on.event("charge.dispute.closed", {**dispute, "status": "lost"}))  # a new event id, same dispute
    assert balance_of(user=alice) == 0
    assert LedgerEntry.objects.filter(account__user=alice, kind="reversal").count() == 1
    order = Order.objects.get(checkout_session_id=session_id)
    assert order.status == "dispute_lost" and not CreditAccount.objects.get(user=alice).frozen


@pytest.mark.django_db
def test_the_purchases_page_lists_orders_with_their_status(client, alice, pack, stripe_on):
    session_id = paid(client, alice, pack, stripe_on)
    deliver(stripe_on.event("charge.refunded", stripe_on.charge(session_id, amount_refunded=500)))
    client.force_login(alice)
    html = client.get(reverse("purchases")).content.decode()
    assert "Test pack" in html and "Partially refunded" in html and "10.00 USD" in html


# --- Disputes out of order ----------------------------------------------------------------


def ledger_total(user) -> int:
    return sum(LedgerEntry.objects.filter(account__user=user).values_list("amount", flat=True))


@pytest.mark.django_db
@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_a_dispute_created_retried_after_it_closed_changes_nothing(client, alice, pack, stripe_on, outcome):
    session_id = paid(client, alice, pack, stripe_on)
    dispute = stripe_on.dispute(session_id)
    created = stripe_on.event("charge.dispute.created", dispute)
    deliver(created)
    deliver(stripe_on.event("charge.dispute.closed", {**dispute, "status": outcome}))
    deliver(stripe_on.event("charge.dispute.created", dispute))  # a retry, late, with its own event id
    assert deliver(created).json()["outcome"] == "duplicate"
    order = Order.objects.get(checkout_session_id=session_id)
    account = CreditAccount.objects.get(user=alice)
    expected = ("paid", 100, 0) if outcome == "won" else ("dispute_lost", 0, 1)
    reversals = LedgerEntry.objects.filter(account__user=alice, kind="reversal").count()
    assert (order.status, account.balance, reversals) == expected
    assert not account.frozen and account.debt == 0 and ledger_total(alice) == account.balance


@pytest.mark.django_db
@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_a_dispute_closed_before_its_created_event_ends_the_same(client, alice, pack, stripe_on, outcome):
    session_id = paid(client, alice, pack, stripe_on)
    credits_hold(user=alice, amount=30, ref="hold:job:x")
    credits_capture(hold_ref="hold:job:x", ref="capture:job:x")
    dispute = stripe_on.dispute(session_id)
    closed = stripe_on.event("charge.dispute.closed", {**dispute, "status": outcome})
    deliver(closed)
    deliver(stripe_on.event("charge.dispute.created", dispute))
    deliver(closed)  # a duplicate
    order = Order.objects.get(checkout_session_id=session_id)
    account = CreditAccount.objects.get(user=alice)
    # lost: the 70 credits left are taken back, the 30 spent are owed
    expected = ("paid", 70, 0) if outcome == "won" else ("dispute_lost", 0, 30)
    assert (order.status, account.balance, account.debt) == expected
    assert not account.frozen and ledger_total(alice) == account.balance
    if outcome == "won":
        credits_hold(user=alice, amount=70, ref="hold:job:y")  # not frozen for good


@pytest.mark.django_db
def test_another_open_dispute_keeps_the_account_frozen_after_one_closes(client, alice, pack, stripe_on):
    first, second = paid(client, alice, pack, stripe_on), paid(client, alice, pack, stripe_on)
    one, two = stripe_on.dispute(first), stripe_on.dispute(second)
    deliver(stripe_on.event("charge.dispute.created", one))
    deliver(stripe_on.event("charge.dispute.created", two))
    deliver(stripe_on.event("charge.dispute.closed", {**one, "status": "won"}))
    assert CreditAccount.objects.get(user=alice).frozen
    deliver(stripe_on.event("charge.dispute.closed", {**two, "status": "won"}))
    account = CreditAccount.objects.get(user=alice)
    assert not account.frozen and account.balance == 200 == ledger_total(alice)


# --- A session Stripe made but we never saved on the order ---------------------------------


def crash_before_saving(session_id: str) -> Order:
    """As if the process died between Stripe's answer and saving its id."""
    order = Order.objects.get(checkout_session_id=session_id)
    Order.objects.filter(id=order.id).update(checkout_session_id=None)
    return order


@pytest.mark.django_db
def test_a_session_never_saved_on_its_order_is_fulfilled_by_the_webhook(client, alice, pack, stripe_on):
    session_id = buy(client, alice, pack, stripe_on)
    order = crash_before_saving(session_id)
    assert deliver(stripe_on.event("checkout.session.completed", stripe_on.pay(session_id))).json() == {
        "received": True,
        "outcome": "applied",
    }
    deliver(stripe_on.event("checkout.session.completed", stripe_on.sessions[session_id]))  # another event id
    order.refresh_from_db()
    assert (order.checkout_session_id, order.status) == (session_id, "paid")
    assert balance_of(user=alice) == 100 == ledger_total(alice) and grants(alice) == 1


@pytest.mark.django_db
def test_a_session_never_saved_on_its_order_is_fulfilled_by_the_success_page(client, alice, bob, pack, stripe_on):
    session_id = buy(client, alice, pack, stripe_on)
    crash_before_saving(session_id)
    stripe_on.pay(session_id)
    other = Client()
    other.force_login(bob)
    assert other.get(reverse("billing_success"), {"session_id": session_id}).status_code == 404
    html = client.get(reverse("billing_success"), {"session_id": session_id}).content.decode()
    assert "100 credits were added" in html
    assert balance_of(user=alice) == 100 == ledger_total(alice) and balance_of(user=bob) == 0


@pytest.mark.django_db
@pytest.mark.parametrize("lie", ["someone else's order", "another pack's order", "an order with its own session"])
def test_a_session_that_does_not_match_the_order_in_its_metadata_is_refused_and_logged(
    client, alice, bob, pack, stripe_on, caplog, lie
):
    session_id = buy(client, alice, pack, stripe_on)
    crash_before_saving(session_id)
    if lie == "someone else's order":
        target = crash_before_saving(buy(Client(), bob, pack, stripe_on))
    elif lie == "another pack's order":
        big = CreditPack.objects.create(name="Big", credits=1000, price_cents=5000, currency="usd")
        target = crash_before_saving(buy(Client(), alice, big, stripe_on))
    else:
        target = Order.objects.get(checkout_session_id=buy(Client(), alice, pack, stripe_on))
    stripe_on.sessions[session_id]["metadata"]["order_id"] = str(target.id)
    stripe_on.sessions[session_id]["client_reference_id"] = str(target.id)
    response = deliver(stripe_on.event("checkout.session.completed", stripe_on.pay(session_id)))
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    assert "refused Checkout Session" in caplog.text
    assert balance_of(user=alice) == 0 and balance_of(user=bob) == 0 and not LedgerEntry.objects.exists()
    target.refresh_from_db()
    assert target.status == "pending" and target.checkout_session_id != session_id


# --- No transaction open while Stripe is called ---------------------------------------------


@pytest.fixture
def stripe_calls(stripe_on, monkeypatch):
    """Each request the fake Stripe serves, with how many atomic blocks the
    test's database connection had open at that moment (read from the
    server's thread while our side waits for the answer)."""
    from django.db import connections

    ours = connections["default"]
    calls = []
    route = stripe_on._route

    def spy(method, path, query, form):
        calls.append((method, path.rsplit("/", 1)[0] if path.count("/") > 3 else path, len(ours.atomic_blocks)))
        return route(method, path, query, form)

    monkeypatch.setattr(stripe_on, "_route", spy)
    return calls


@pytest.mark.django_db
def test_stripe_is_never_called_inside_a_database_transaction(client, alice, charlie, pack, stripe_on, stripe_calls):
    from django.db import connections

    outside = len(connections["default"].atomic_blocks)  # the test's own wrapping, if any
    session_id = buy(client, alice, pack, stripe_on)
    stripe_on.pay(session_id)
    client.get(reverse("billing_success"), {"session_id": session_id})
    deliver(stripe_on.event("checkout.session.completed", stripe_on.sessions[session_id]))
    late = buy(client, alice, pack, stripe_on)  # a refund that arrives before its checkout events
    stripe_on.pay(late)
    deliver(stripe_on.event("charge.refunded", stripe_on.charge(late, amount_refunded=1000)))
    refund_as(charlie, Order.objects.get(checkout_session_id=session_id))
    assert {(method, path) for method, path, _ in stripe_calls} == {
        ("POST", "/v1/checkout/sessions"),
        ("GET", "/v1/checkout/sessions"),
        ("POST", "/v1/refunds"),
    }
    assert [call for call in stripe_calls if call[2] != outside] == []
    assert balance_of(user=alice) == 100 == ledger_total(alice) and grants(alice) == 2


# --- Stripe outages: a clear answer, never a 500 -------------------------------------------


class Outage:
    """Takes the fake Stripe down (nothing listens, or every answer a 500)
    and brings it back."""

    def __init__(self, kind: str, fake: FakeStripe, settings) -> None:
        self.kind, self.fake, self.settings = kind, fake, settings
        self.route = fake._route

    def start(self) -> None:
        if self.kind == "refused":
            self.settings.STRIPE_API_BASE = "http://127.0.0.1:9"
        else:
            self.fake._route = lambda *a: (500, {"error": {"type": "api_error", "message": "down"}})

    def end(self) -> None:
        self.settings.STRIPE_API_BASE = self.fake.url
        self.fake._route = self.route


@pytest.fixture(params=["refused", "500"])
def outage(request, stripe_on, settings):
    outage = Outage(request.param, stripe_on, settings)
    yield outage
    outage.end()


@pytest.mark.django_db
def test_buying_while_stripe_is_down_says_so_with_503_and_charges_nothing(client, alice, pack, stripe_on, outage):
    outage.start()
    client.force_login(alice)
    response = client.post(reverse("billing_buy", args=[pack.id]))
    html = response.content.decode()
    assert response.status_code == 503
    assert "Payments are unavailable right now" in html and "Nothing was charged" in html
    assert balance_of(user=alice) == 0 and not LedgerEntry.objects.exists()


@pytest.mark.django_db
def test_the_success_page_while_stripe_is_down_says_the_credits_will_follow(client, alice, pack, stripe_on, outage):
    session_id = buy(client, alice, pack, stripe_on)
    stripe_on.pay(session_id)
    outage.start()  # the customer paid, then Stripe's API went away
    response = client.get(reverse("billing_success"), {"session_id": session_id})
    assert response.status_code == 503 and "arrive automatically" in response.content.decode()
    assert balance_of(user=alice) == 0
    outage.end()
    html = client.get(reverse("billing_success"), {"session_id": session_id}).content.decode()
    assert "100 credits were added" in html
    assert balance_of(user=alice) == 100 == ledger_total(alice) and grants(alice) == 1


@pytest.mark.django_db
def test_a_webhook_while_stripe_is_down_is_503_in_the_error_shape_and_applies_on_redelivery(
    client, alice, pack, stripe_on, outage
):
    session_id = buy(client, alice, pack, stripe_on)
    event = stripe_on.event("checkout.session.completed", stripe_on.pay(session_id))
    outage.start()
    response = deliver(event)
    assert response.status_code == 503 and response.json()["error"]["code"] == "payments_unavailable"
    assert not StripeEvent.objects.exists() and balance_of(user=alice) == 0
    outage.end()
    assert deliver(event).json()["outcome"] == "applied"
    assert balance_of(user=alice) == 100 == ledger_total(alice) and grants(alice) == 1


@pytest.mark.django_db
def test_a_staff_refund_while_stripe_is_down_says_so_and_changes_nothing(
    client, alice, charlie, pack, stripe_on, outage
):
    order = Order.objects.get(checkout_session_id=paid(client, alice, pack, stripe_on))
    refunds = len(stripe_on.refunds)
    outage.start()
    staff = Client()
    staff.force_login(charlie)
    response = staff.post(
        reverse("admin:billing_order_changelist"), {"action": "refund", "_selected_action": [order.id]}, follow=True
    )
    assert response.status_code == 200 and "nothing was refunded" in response.content.decode()
    assert len(stripe_on.refunds) == refunds and balance_of(user=alice) == 100 == ledger_total(alice)
