"""The fair queue: within a checkpoint, workers take jobs round-robin across
people, heavier queue weights take more turns per round without starving
anyone, and the queue positions people see follow the same order."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.availability import available_slugs
from generation.dispatch import SENT_PREFIX, jobs_unsent
from generation.models import Job
from generation.selectors import fair_next, fair_queue, queue_position
from generation.services import job_claim
from tests.conftest import make_user, wait_for
from tests.helpers import api_client, make_job

SLUG = "test-sd2"  # no worker serves it in these row tests: nothing runs by itself


@pytest.fixture
def catalog(test_checkpoints, db):
    from catalog.seeds import catalog_register_test_checkpoints

    catalog_register_test_checkpoints(test_checkpoints.values())


def positions(jobs) -> list[int | None]:
    return [queue_position(Job.objects.get(id=job.id)) for job in jobs]


def claim_all(any_job) -> list:
    """Claim until nothing is queued, each time with the message of `any_job`
    (a message is a turn of its checkpoint, not a ticket for its own job)."""
    order = []
    while (job := job_claim(job_id=any_job.id, worker="w")) is not None:
        order.append(job.id)
    return order


@pytest.mark.django_db
def test_one_person_s_burst_waits_behind_everyone_else_s_first_job(alice, bob, catalog):
    burst = [make_job(alice, SLUG, prompt=f"alice {i}") for i in range(5)]
    late = make_job(bob, SLUG, prompt="bob")
    assert positions([*burst, late]) == [1, 3, 4, 5, 6, 2]
    client = api_client(bob)
    assert client.get(f"/api/v1/jobs/{late.id}").json()["queue_position"] == 2
    # The workers' order is the order shown: bob's job runs second, not sixth.
    assert claim_all(burst[3]) == [burst[0].id, late.id, *(job.id for job in burst[1:])]


@pytest.mark.django_db
def test_a_priority_account_takes_more_turns_without_starving_others(alice, bob, catalog):
    partner = make_user("partner@example.com")
    partner.queue_weight = partner.QueueWeight.PRIORITY
    partner.save()
    a = [make_job(alice, SLUG, prompt=f"a{i}") for i in range(3)]
    p = [make_job(partner, SLUG, prompt=f"p{i}") for i in range(4)]
    b = [make_job(bob, SLUG, prompt="b0")]
    # Round 1: partner's two, then alice's and bob's first; round 2: partner's
    # next two, alice's second; round 3: alice's third.
    expected = [p[0], p[1], a[0], b[0], p[2], p[3], a[1], a[2]]
    shown = sorted([*a, *p, *b], key=lambda job: queue_position(Job.objects.get(id=job.id)))
    assert [job.id for job in shown] == [job.id for job in expected]
    assert claim_all(b[0]) == [job.id for job in expected]


@pytest.mark.django_db
def test_the_message_s_own_job_keeps_its_sent_marker_when_another_is_taken(alice, bob, catalog):
    from catalog.availability import heartbeat_client

    first, second = make_job(alice, SLUG), make_job(alice, SLUG)
    other = make_job(bob, SLUG)
    for job in (first, second, other):
        heartbeat_client().set(SENT_PREFIX + str(job.id), "1", ex=60)
    job_claim(job_id=first.id, worker="w")  # takes first: its marker goes
    taken = job_claim(job_id=second.id, worker="w")  # second's message takes bob's job
    assert taken.id == other.id
    # second is still queued and still has a message in the broker (bob's):
    # the sweep must not send it again.
    assert jobs_unsent([second.id, other.id, first.id]) == [other.id, first.id]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plan=st.lists(st.tuples(st.integers(0, 2), st.sampled_from([1, 2, 4])), min_size=1, max_size=12),
)
@pytest.mark.django_db
def test_positions_shown_are_the_order_workers_take(plan, catalog):
    Job.objects.all().delete()
    people = [make_user(f"p{index}-{uuid.uuid4().hex[:8]}@example.com") for index in range(3)]
    jobs = []
    for who, weight in plan:
        user = people[who]
        user.queue_weight = weight
        user.save(update_fields=["queue_weight"])
        jobs.append(make_job(user, SLUG))
    shown = sorted(jobs, key=lambda job: queue_position(Job.objects.get(id=job.id)))
    assert sorted(positions(jobs)) == list(range(1, len(jobs) + 1))
    assert claim_all(jobs[-1]) == [job.id for job in shown]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plan=st.lists(st.tuples(st.integers(0, 2), st.sampled_from([1, 2, 3])), min_size=1, max_size=10),
    taken=st.integers(0, 4),
    ended=st.integers(0, 2),
)
@pytest.mark.django_db
def test_the_position_read_answers_what_the_orm_s_fair_keys_do(plan, taken, ended, catalog):
    """queue_position's literal SQL against jobs_shown's ORM count, in a
    busy period where some jobs were taken (and some of those ended) while
    others wait, with ties in creation time."""
    from django.utils import timezone

    from generation.selectors import jobs_shown

    Job.objects.all().delete()
    people = [make_user(f"q{index}-{uuid.uuid4().hex[:8]}@example.com") for index in range(3)]
    now = timezone.now()
    jobs = []
    for index, (who, weight) in enumerate(plan):
        user = people[who]
        user.queue_weight = weight
        user.save(update_fields=["queue_weight"])
        jobs.append(make_job(user, SLUG))
        if index % 3 == 1:  # same creation time as the one before: the id breaks the tie
            Job.objects.filter(id=jobs[-1].id).update(created_at=Job.objects.get(id=jobs[-2].id).created_at)
    for _ in range(taken):
        job_claim(job_id=jobs[0].id, worker="w")
    started = Job.objects.filter(status="running").order_by("started_at")[:ended]
    Job.objects.filter(id__in=list(started.values_list("id", flat=True))).update(status="succeeded", finished_at=now)
    for job in Job.objects.filter(status="queued"):
        expected = jobs_shown(Job.objects.filter(id=job.id)).values_list("queue_ahead", flat=True).get()
        assert queue_position(job) == expected + 1
    checkpoint_id = jobs[0].checkpoint_id
    in_order = list(fair_queue(checkpoint_id=checkpoint_id).values_list("id", flat=True))
    assert fair_next(checkpoint_id=checkpoint_id, limit=100) == in_order
    assert fair_next(checkpoint_id=checkpoint_id, limit=2) == in_order[:2]


@pytest.mark.django_db
def test_the_claim_order_skips_what_a_worker_cannot_run_as_the_orm_s_rule_does(alice, bob, catalog):
    """fair_next's literal rule for ControlNet jobs against Abilities.runnable
    (the ORM's), for workers with no network, one, or both, with and
    without the annotator a preprocess needs."""
    from catalog.models import ControlNet
    from generation.services import Abilities

    Job.objects.all().delete()
    canny, _ = ControlNet.objects.get_or_create(
        slug="test-sd1-canny", defaults={"name": "canny", "family": "sd1", "kind": "canny", "source": "x/y"}
    )
    jobs = [
        make_job(alice, SLUG),
        make_job(bob, SLUG, mode="controlnet", controlnet=canny, preprocess="canny", control_image="c/1.png"),
        make_job(alice, SLUG, mode="controlnet", controlnet=canny, preprocess="depth", control_image="c/2.png"),
        make_job(alice, SLUG, mode="txt2img"),
    ]
    checkpoint_id = jobs[0].checkpoint_id
    for controls, annotators in [
        (set(), set()),
        ({"test-sd1-canny"}, set()),
        ({"test-sd1-canny"}, {"depth"}),
        ({"test-sdxl-canny"}, {"depth", "openpose", "lineart"}),
        ({"test-sd1-canny", "test-sdxl-canny"}, {"depth"}),
    ]:
        abilities = Abilities(controls=frozenset(controls), annotators=frozenset(annotators))
        orm = fair_queue(checkpoint_id=checkpoint_id).filter(abilities.runnable()).values_list("id", flat=True)
        literal = fair_next(checkpoint_id=checkpoint_id, limit=10, controls=controls, annotators=annotators)
        assert literal == list(orm), (controls, annotators)
        assert len(literal) >= 2  # the image to image and text to image jobs, at least


@pytest.mark.django_db(transaction=True)
def test_with_one_worker_the_second_person_s_job_runs_second(paid_api, alice, bob, start_worker, monkeypatch):
    from django.core.files.uploadedfile import SimpleUploadedFile

    import generation.services
    from billing.ledger import credits_grant
    from tests.helpers import png_bytes

    credits_grant(user=bob, amount=100, ref="g:bob")
    # The jobs queue up (their messages wait in the broker) before any worker runs.
    monkeypatch.setattr(generation.services.submit, "available_slugs", lambda: {SLUG})

    def submit(client, prompt: str) -> str:
        data = {"model": SLUG, "prompt": prompt, "steps": 2, "strength": 1.0, "width": 64, "height": 64}
        response = client.post("/api/v1/img2img", {**data, "image": SimpleUploadedFile("in.png", png_bytes())})
        assert response.status_code == 202, response.content
        return response.json()["id"]

    mine = [submit(paid_api, f"alice {i}") for i in range(5)]
    theirs = submit(api_client(bob), "bob")
    start_worker(SLUG, JOB_BATCH_MAX="1")
    wait_for(lambda: SLUG in available_slugs(), timeout=90, message="the worker")
    ids = [*mine, theirs]
    wait_for(lambda: all(Job.objects.get(id=i).is_finished for i in ids), timeout=180, message="every job to end")
    started = sorted(ids, key=lambda i: Job.objects.get(id=i).started_at)
    assert started[:2] == [mine[0], theirs]


@pytest.mark.django_db
def test_a_turn_is_never_wasted_while_a_job_waits(alice, bob, catalog, monkeypatch):
    """A message whose own job is gone still serves its checkpoint's queue
    (the worker knows the checkpoint from the queue it came from), and a
    claim that loses its race to other workers reads the queue again."""
    import generation.services

    gone = make_job(alice, SLUG)
    waiting = make_job(bob, SLUG)
    gone.delete()
    assert job_claim(job_id=gone.id, worker="w", slug=SLUG).id == waiting.id

    taken = [make_job(alice, SLUG) for _ in range(6)]
    last = make_job(bob, SLUG)
    Job.objects.filter(id__in=[job.id for job in taken]).update(status="running", worker="others")
    real, reads = generation.services.claims.fair_next, []

    def stale_then_real(**filters):  # the first read predates the other workers' claims
        reads.append(filters)
        return [job.id for job in taken][: filters["limit"]] if len(reads) == 1 else real(**filters)

    monkeypatch.setattr(generation.services.claims, "fair_next", stale_then_real)
    assert job_claim(job_id=last.id, worker="w").id == last.id
    assert len(reads) >= 2


def test_a_webhook_attempt_is_bounded_by_its_task_s_time_limit():
    from django.conf import settings as django_settings

    from generation.tasks import deliver_webhook
    from generation.webhooks import _claim_seconds

    assert deliver_webhook.soft_time_limit == django_settings.WEBHOOK_TIMEOUT + 5
    assert deliver_webhook.time_limit < _claim_seconds()
