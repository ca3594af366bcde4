"""Staff tools: the read-only ledger and the grant/deduct action."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from billing.ledger import account_of, credits_grant
from billing.models import LedgerEntry
from billing.selectors import balance_of
from tests.conftest import make_user

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:billing_creditaccount_changelist")


def adjust(client, accounts, *, amount, memo, token=None, apply=True):
    data = {
        "action": "adjust_credits",
        "_selected_action": [a.pk for a in accounts],
        "amount": amount,
        "memo": memo,
        "token": token or str(uuid.uuid4()),
    }
    if apply:
        data["apply"] = "Apply"
    return client.post(CHANGELIST, data)


def test_the_ledger_is_read_only_in_the_admin(client, charlie, alice):
    entry = credits_grant(user=alice, amount=3, ref="g")
    client.force_login(charlie)
    assert client.get(reverse("admin:billing_ledgerentry_changelist")).status_code == 200
    assert client.get(reverse("admin:billing_ledgerentry_add")).status_code == 403
    detail = client.get(reverse("admin:billing_ledgerentry_change", args=[entry.pk]))
    assert detail.status_code == 200 and b'name="amount"' not in detail.content
    response = client.post(reverse("admin:billing_ledgerentry_change", args=[entry.pk]), {"amount": 999})
    assert response.status_code == 403
    assert client.post(reverse("admin:billing_ledgerentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    entry.refresh_from_db()
    assert entry.amount == 3


def test_staff_grant_credits_with_a_memo_recorded_with_them_as_actor(client, charlie, alice, bob):
    accounts = [account_of(user=alice), account_of(user=bob)]
    client.force_login(charlie)
    form = adjust(client, accounts, amount=5, memo="", apply=False)
    assert form.status_code == 200 and b"Grant or deduct credits" in form.content

    response = adjust(client, accounts, amount=5, memo="Sorry for the outage")
    assert response.status_code == 302
    for user in (alice, bob):
        entry = LedgerEntry.objects.get(account__user=user)
        assert (entry.kind, entry.amount, entry.actor, entry.memo) == ("adjustment", 5, charlie, "Sorry for the outage")


def test_a_memo_is_required(client, charlie, alice):
    client.force_login(charlie)
    response = adjust(client, [account_of(user=alice)], amount=5, memo="   ")
    assert response.status_code == 200
    assert b"required" in response.content
    assert balance_of(user=alice) == 0


def test_a_double_submitted_form_applies_once(client, charlie, alice):
    client.force_login(charlie)
    token = str(uuid.uuid4())
    adjust(client, [account_of(user=alice)], amount=4, memo="goodwill", token=token)
    adjust(client, [account_of(user=alice)], amount=4, memo="goodwill", token=token)
    assert balance_of(user=alice) == 4


def test_a_deduction_never_goes_below_zero(client, charlie, alice):
    credits_grant(user=alice, amount=2, ref="g")
    client.force_login(charlie)
    response = adjust(client, [account_of(user=alice)], amount=-3, memo="abuse", apply=True)
    assert response.status_code == 302
    assert balance_of(user=alice) == 2
    adjust(client, [account_of(user=alice)], amount=-2, memo="abuse")
    assert balance_of(user=alice) == 0


def test_staff_without_the_permission_cannot_adjust(client, alice):
    viewer = make_user("viewer@example.com", staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_creditaccount"))
    client.force_login(viewer)
    page = client.get(CHANGELIST)
    assert page.status_code == 200 and b"adjust_credits" not in page.content
    adjust(client, [account_of(user=alice)], amount=100, memo="self-service")
    assert balance_of(user=alice) == 0


def test_a_staff_credit_pays_the_debt_first(client, charlie, alice):
    from billing.ledger import credits_capture, credits_hold, credits_reverse
    from billing.models import CreditAccount

    credits_grant(user=alice, amount=10, ref="stripe:cs_1", kind="purchase")
    credits_hold(user=alice, amount=6, ref="h")
    credits_capture(hold_ref="h", ref="c")
    credits_reverse(entry_ref="stripe:cs_1", ref="refund:1")
    client.force_login(charlie)
    adjust(client, [account_of(user=alice)], amount=10, memo="goodwill after the refund")
    account = CreditAccount.objects.get(user=alice)
    assert (account.balance, account.debt) == (4, 0)
    entry = LedgerEntry.objects.get(kind="adjustment")
    assert (entry.amount, entry.debt_paid, entry.actor) == (4, 6, charlie)


def test_a_staff_adjustment_is_written_to_the_admin_log(client, alice):
    from django.contrib.admin.models import LogEntry

    clerk = make_user("clerk@example.com", staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["view_creditaccount", "adjust_credits"]))
    client.force_login(clerk)
    account = account_of(user=alice)
    assert adjust(client, [account], amount=5, memo="Sorry for the outage").status_code == 302
    assert balance_of(user=alice) == 5 and LedgerEntry.objects.get(account=account).actor == clerk
    log = LogEntry.objects.get(user=clerk)
    assert (
        log.object_id == str(account.pk) and "+5" in log.change_message and "Sorry for the outage" in log.change_message
    )


# --- Other people's images: a permission of its own, and every look is logged -----------


@pytest.fixture
def someone_elses_image(alice, test_checkpoints):
    from django.core.files.base import ContentFile

    from catalog.seeds import catalog_register_test_checkpoints
    from generation.models import JobImage
    from tests.helpers import make_job, png_bytes

    catalog_register_test_checkpoints(test_checkpoints.values())
    job = make_job(alice, "test-sd1", status="succeeded")
    image = JobImage(job=job, index=0, width=96, height=80)
    image.file.save("result.png", ContentFile(png_bytes()), save=True)
    return image


def test_staff_without_the_permission_cannot_see_someone_elses_image(client, someone_elses_image):
    from django.contrib.admin.models import LogEntry

    staff = make_user("staff@example.com", staff=True)
    client.force_login(staff)
    image = someone_elses_image
    assert client.get(f"/api/v1/images/{image.id}").status_code == 404
    assert client.get(f"/api/v1/jobs/{image.job_id}").status_code == 404
    assert not LogEntry.objects.exists()


def test_staff_with_the_permission_see_someone_elses_image_and_it_is_logged(client, alice, someone_elses_image):
    from django.contrib.admin.models import LogEntry

    staff = make_user("auditor@example.com", staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_others_jobs"))
    client.force_login(staff)
    image = someone_elses_image
    response = client.get(f"/api/v1/images/{image.id}")
    assert response.status_code == 200 and b"".join(response.streaming_content).startswith(b"\x89PNG")
    log = LogEntry.objects.get(user=staff)
    assert log.object_id == str(image.job_id) and "another person" in log.change_message
    client.force_login(alice)  # the owner's own looks are not audited
    assert client.get(f"/api/v1/images/{image.id}").status_code == 200
    assert LogEntry.objects.count() == 1


def test_staff_looking_at_someone_elses_job_page_or_json_is_logged(client, alice, someone_elses_image):
    from django.contrib.admin.models import LogEntry

    staff = make_user("auditor@example.com", staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_others_jobs"))
    client.force_login(staff)
    job = someone_elses_image.job
    assert client.get(f"/jobs/{job.id}/").status_code == 200
    assert client.get(f"/api/v1/jobs/{job.id}").status_code == 200
    messages = sorted(
        LogEntry.objects.filter(user=staff, object_id=str(job.id)).values_list("change_message", flat=True)
    )
    assert messages == [
        "Viewed the JSON of another person's job (not changed).",
        "Viewed the page of another person's job (not changed).",
    ]


def test_staff_who_may_see_someone_elses_job_cannot_act_on_it(client, alice, someone_elses_image):
    """view_others_jobs is for looking: no cancel, no "again", no use of the
    private result as one's own input (API and pages), and the page offers
    none of those actions."""
    from billing.ledger import credits_hold
    from generation.models import Job
    from tests.helpers import make_job

    staff = make_user("auditor@example.com", staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_others_jobs"))
    credits_grant(user=staff, amount=50, ref="g:auditor")
    finished = someone_elses_image.job
    running = make_job(alice, "test-sd1", status="running")
    credits_grant(user=alice, amount=5, ref="g:alice")
    credits_hold(user=alice, amount=running.credits_held, ref=running.hold_ref)
    client.force_login(staff)

    assert client.post(f"/api/v1/jobs/{running.id}/cancel").status_code == 404
    assert client.post(reverse("job_cancel", args=[running.id])).status_code == 404
    assert client.post(reverse("job_again", args=[finished.id])).status_code == 404
    quote = client.post("/api/v1/quote", {"model": "test-sd1", "parent_job": str(finished.id)})
    assert quote.status_code == 404, quote.content
    assert client.get(reverse("create") + f"?parent={finished.id}").status_code == 404
    assert Job.objects.get(id=running.id).status == "running"
    assert Job.objects.filter(user=staff).count() == 0

    page = client.get(reverse("job", args=[finished.id])).content.decode()
    assert "Use as input" not in page and "Again with a new seed" not in page
    client.force_login(alice)  # the owner still has them
    page = client.get(reverse("job", args=[finished.id])).content.decode()
    assert "Use as input" in page and "Again with a new seed" in page


def test_an_orders_page_lists_its_ledger_rows_signed(client, charlie, alice):
    from billing.ledger import credits_reverse
    from billing.models import CreditPack, Order

    pack = CreditPack.objects.create(name="Small", credits=100, price_cents=500)
    order = Order.objects.create(
        user=alice, pack=pack, credits=100, amount_cents=500, currency="usd", checkout_session_id="cs_ledger"
    )
    credits_grant(user=alice, amount=100, ref=order.grant_ref, kind="purchase")
    credits_reverse(entry_ref=order.grant_ref, ref="stripe:refund:re_1", amount=40)
    client.force_login(charlie)
    page = client.get(reverse("admin:billing_order_change", args=[order.pk])).content.decode()
    assert "stripe:cs_ledger +100, stripe:refund:re_1 -40" in page
