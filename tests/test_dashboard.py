"""The staff dashboard on the admin index (portal.admin_site): the last day's
jobs, failures, busiest models, money, the credit liability and the jobs
that look stuck. Rows are made directly; no worker process runs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.ledger import credits_grant, credits_hold
from billing.models import CreditAccount, CreditPack, Order
from billing.selectors import credits_outstanding, sales_summary
from catalog.models import Checkpoint
from catalog.seeds import catalog_register_test_checkpoints
from generation.models import Job
from generation.selectors import busiest_checkpoints, failures_by_code, jobs_per_hour
from tests.conftest import make_user
from tests.helpers import make_job
from workers.heartbeat import publish, remove
from workers.testweights import RANDOM_CHECKPOINTS

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(db):
    catalog_register_test_checkpoints(RANDOM_CHECKPOINTS)


@pytest.fixture
def worker(own_heartbeats):
    publish(worker_id="dashboard-w1", serves=["test-sd1", "test-sd2"], loaded=[], device="cpu")
    yield
    remove("dashboard-w1")


def aged(job: Job, **ago) -> Job:
    """Move the job's submit time back (created_at is set on insert)."""
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(**ago))
    return job


def section(html: str, element_id: str, end: str = "</table>") -> str:
    part = html[html.index(f'id="{element_id}"') :]
    return part[: part.index(end)]


def test_the_liability_is_the_sum_of_all_balances(client, charlie, alice, bob):
    credits_grant(user=alice, amount=30, ref="g:alice")
    credits_grant(user=bob, amount=12, ref="g:bob")
    credits_hold(user=alice, amount=10, ref="hold:test")  # a hold leaves the balance: 20 spendable
    total = sum(CreditAccount.objects.values_list("balance", flat=True))
    assert credits_outstanding()["liability"] == total == 32 and credits_outstanding()["held"] == 10
    client.force_login(charlie)
    html = client.get(reverse("admin:index")).content.decode()
    assert "<strong>32</strong>" in section(html, "liability", end="</p>")
    assert "<strong>10</strong>" in section(html, "on-hold", end="</p>")


def test_people_who_are_not_staff_never_see_the_dashboard(client, alice):
    for who in (None, alice):
        if who:
            client.force_login(who)
        response = client.get(reverse("admin:index"))
        assert response.status_code == 302 and 'id="dashboard"' not in response.content.decode()


def test_the_money_is_shown_only_to_staff_who_may_view_orders(client, charlie):
    from django.contrib.auth.models import Permission

    from tests.conftest import make_user

    support = make_user("support@example.com", staff=True)
    client.force_login(support)
    html = client.get(reverse("admin:index")).content.decode()
    assert 'id="dashboard"' in html and 'id="liability"' not in html and 'id="sales"' not in html
    support.user_permissions.add(Permission.objects.get(codename="view_order", content_type__app_label="billing"))
    support = type(support).objects.get(pk=support.pk)  # permissions are cached per instance
    client.force_login(support)
    assert 'id="liability"' in client.get(reverse("admin:index")).content.decode()


def test_stuck_and_slow_jobs_are_listed_with_a_link_each(client, charlie, alice, catalog, worker):
    now = timezone.now()
    finished = now - timedelta(minutes=5)
    for _ in range(3):  # test-sd1 typically runs 10 s
        make_job(
            alice, "test-sd1", status="succeeded", started_at=finished - timedelta(seconds=10), finished_at=finished
        )
    lost = make_job(
        alice,
        "test-sd1",
        status="running",
        started_at=now - timedelta(seconds=20),
        lease_expires_at=now - timedelta(minutes=3),
    )
    slow = make_job(
        alice,
        "test-sd1",
        status="running",
        started_at=now - timedelta(hours=1),
        lease_expires_at=now + timedelta(seconds=8),
    )
    on_time = make_job(
        alice,
        "test-sd1",
        status="running",
        started_at=now - timedelta(seconds=5),
        lease_expires_at=now + timedelta(seconds=8),
    )
    waiting = aged(make_job(alice, "test-sd2"), hours=2)
    fresh = make_job(alice, "test-sd2")
    disabled = aged(make_job(alice, "test-sdxl"), hours=1)  # its model is disabled: judged by the floor alone
    Checkpoint.objects.filter(slug="test-sdxl").update(enabled=False)
    client.force_login(charlie)
    table = section(client.get(reverse("admin:index")).content.decode(), "stuck-jobs")
    for job, why in [
        (lost, "lease expired 3 min ago"),
        (slow, "running 60 min (typical 10 s)"),
        (waiting, "queued 2 h"),
        (disabled, "queued 60 min (expected unknown)"),
    ]:
        assert f'href="{reverse("job", args=[job.id])}"' in table and why in table
    for job in (on_time, fresh):
        assert str(job.id) not in table


def test_jobs_per_hour_failures_and_busiest_models_cover_the_last_day(client, charlie, alice, catalog):
    now = timezone.now()
    since = now - timedelta(hours=24)
    for code in ("moderated", "moderated", "oom"):
        make_job(alice, "test-sd1", status="failed", error_code=code, finished_at=now)
    make_job(alice, "test-sd2", status="succeeded", num_images=2, credits_charged=4, finished_at=now)
    aged(make_job(alice, "test-sd2", status="failed", error_code="old", finished_at=now - timedelta(days=2)), days=2)
    aged(make_job(alice, "test-sd2"), hours=3)
    hours = jobs_per_hour(since=since, now=timezone.now())  # now: the jobs' hour, even at an hour's turn
    assert len(hours) in (24, 25) and sum(hour.submitted for hour in hours) == 5
    assert (hours[-1].submitted, hours[-1].failed, hours[-1].succeeded) == (4, 3, 1)
    assert failures_by_code(since=since) == [{"error_code": "moderated", "count": 2}, {"error_code": "oom", "count": 1}]
    busiest = busiest_checkpoints(since=since)
    assert [(m["slug"], m["jobs"], m["failed"]) for m in busiest] == [("test-sd1", 3, 3), ("test-sd2", 2, 0)]
    assert (busiest[1]["images"], busiest[1]["credits"]) == (2, 4)
    client.force_login(charlie)
    html = client.get(reverse("admin:index")).content.decode()
    assert "moderated" in section(html, "failures") and "old" not in section(html, "failures")
    assert "test-sd1" in section(html, "busiest-models")


def test_revenue_and_credits_sold_count_paid_orders_today_and_ever(client, charlie, alice):
    pack = CreditPack.objects.create(name="Small", credits=100, price_cents=500)

    def order(session: str, *, paid_ago: timedelta | None, refunded: int = 0) -> None:
        Order.objects.create(
            user=alice,
            pack=pack,
            credits=100,
            amount_cents=500,
            currency="usd",
            checkout_session_id=session,
            status="pending" if paid_ago is None else "paid",
            paid_at=None if paid_ago is None else timezone.now() - paid_ago,
            amount_refunded_cents=refunded,
        )

    order("cs_1", paid_ago=timedelta(hours=1), refunded=200)
    order("cs_2", paid_ago=timedelta(days=3))
    order("cs_3", paid_ago=None)  # never paid: neither revenue nor credits sold
    (sales,) = sales_summary(since=timezone.now() - timedelta(hours=24))
    assert (sales.day_orders, sales.day_cents, sales.day_net_cents, sales.day_credits) == (1, 500, 300, 100)
    assert (sales.total_orders, sales.total_cents, sales.total_net_cents, sales.total_credits) == (2, 1000, 800, 200)
    client.force_login(charlie)
    table = section(client.get(reverse("admin:index")).content.decode(), "sales")
    assert "5.00 USD (3.00 USD after refunds)" in table and "10.00 USD (8.00 USD after refunds)" in table


def test_the_dashboard_costs_a_bounded_number_of_queries(
    client, charlie, catalog, worker, django_assert_max_num_queries
):
    people = [make_user(f"p{i}@example.com") for i in range(3)]
    for i, person in enumerate(people):
        credits_grant(user=person, amount=10, ref=f"g:{i}")
        make_job(person, "test-sd1", status="failed", error_code=f"e{i}", finished_at=timezone.now())
        make_job(person, "test-sd2", status="running", started_at=timezone.now() - timedelta(hours=1))
        aged(make_job(person, "test-sd2"), hours=2)
    client.force_login(charlie)
    with django_assert_max_num_queries(18):
        response = client.get(reverse("admin:index"))
    assert response.status_code == 200 and response.content.decode().count('href="/jobs/') == 6
