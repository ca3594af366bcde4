"""Moderation: prompts that a rule refuses never become jobs and cost
nothing; pictures that the worker's image classifier flags are never stored,
their job fails "moderated" with its hold released, and staff see both in
the admin's review list."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from billing.models import LedgerEntry
from billing.selectors import balance_of
from catalog.availability import available_slugs
from generation.models import BlockedTerm, Job, ModerationFlag
from generation.moderation import blocked_terms_check
from tests.conftest import wait_for
from tests.faults import assert_books_balance
from tests.helpers import png_bytes

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIER = "test/moderation"  # built by workers.testweights under MODELS_DIR
REAL_WORKER_MODEL = "test-sd1-alt"  # no session worker serves it: only the one a test starts
FLAG_EVERYTHING, FLAG_NOTHING = "0", "1.01"  # random weights: arbitrary scores in (0, 1)


@pytest.fixture
def served(test_checkpoints):
    """A heartbeat that serves every test checkpoint, so a submit is taken
    (nothing is committed in these tests, so no task is sent)."""
    from workers.heartbeat import publish, remove

    worker_id = f"moderation-{uuid.uuid4().hex[:8]}"
    publish(worker_id=worker_id, serves=list(test_checkpoints), loaded=[], device="cpu")
    yield
    remove(worker_id)


def submit(api, *, prompt: str = "a quiet harbour", model: str = "test-sd1", **fields):
    data = {"model": model, "prompt": prompt, "seed": 1, "steps": 5, "strength": 0.6, "width": 128, "height": 96}
    data.update(fields)
    data["image"] = SimpleUploadedFile("in.png", png_bytes())
    return api.post("/api/v1/img2img", data)


def media_files() -> set[str]:
    """Every file under MEDIA_ROOT, as paths relative to it."""
    root = Path(django_settings.MEDIA_ROOT)
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def assert_no_result_on_disk(job: Job) -> None:
    """Walk the tree, not the rows: the only file bearing the job's id is the
    person's own upload (kept for "again"); no result was ever written."""
    mine = {path for path in media_files() if str(job.id) in path}
    assert mine == {f"inputs/{job.user_id}/{job.id}.png"}, mine
    assert not (Path(django_settings.MEDIA_ROOT) / "results" / str(job.user_id) / str(job.id)).exists()


# --- Prompts, at submit --------------------------------------------------------------


@pytest.mark.django_db
def test_a_blocked_prompt_is_refused_with_400_moderated_and_costs_nothing(paid_api, alice, served):
    BlockedTerm.objects.create(term="dragon", note="test rule")
    before = media_files()

    response = submit(paid_api, prompt="A DRAGON over the sea")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "moderated"
    assert set(error["fields"]) == {"prompt"}
    assert "Nothing was charged" in error["message"]
    assert not Job.objects.filter(user=alice).exists()
    assert balance_of(user=alice) == 100
    assert list(LedgerEntry.objects.filter(account__user=alice).values_list("kind", flat=True)) == ["grant"]
    assert media_files() == before
    flag = ModerationFlag.objects.get()
    assert (flag.stage, flag.user, flag.job, flag.field, flag.text) == (
        "prompt",
        alice,
        None,
        "prompt",
        "A DRAGON over the sea",
    )
    assert flag.label == "blocked term: dragon"


@pytest.mark.django_db
def test_a_blocked_negative_prompt_is_refused_naming_that_field(paid_api, alice, served):
    BlockedTerm.objects.create(term="red dragon")
    response = submit(paid_api, prompt="a castle", negative_prompt="blurry, Red  Dragon")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "moderated"
    assert set(response.json()["error"]["fields"]) == {"negative_prompt"}
    assert not Job.objects.exists() and balance_of(user=alice) == 100


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "blocked"),
    [
        ("a cat on a mat", True),
        ("A CAT.", True),
        ("cat-like eyes", True),
        ("(cat)", True),
        ("cats", False),
        ("concatenate these", False),
        ("bobcat", False),
        ("a Red\n  dragon", True),
        ("a red dragonfly", False),
        ("dragon red", False),
        ("Über-Katze", True),
        ("Überkatze", False),
        # As a tokenizer reads it: digits and underscores split a word off,
        # fullwidth letters are letters, format characters are nothing.
        ("cat2", True),
        ("_cat_", True),
        ("a red_dragon", False),  # "_" is no space inside a phrase
        ("\uff23\uff41\uff54", True),  # fullwidth CAT
        ("c\u200bat", True),  # a zero-width space inside
        ("c\u00adat\u200d", True),  # a soft hyphen, a zero-width joiner
        ("bob\u200bcat", False),
    ],
)
def test_rules_match_whole_words_in_any_case(text, blocked):
    BlockedTerm.objects.create(term="cat")
    BlockedTerm.objects.create(term="red   dragon")  # spaces in a phrase match any run of spaces
    BlockedTerm.objects.create(term="über")
    assert bool(blocked_terms_check(field="prompt", text=text)) is blocked


@pytest.mark.django_db
def test_a_disabled_rule_blocks_nothing(paid_api, alice, served):
    BlockedTerm.objects.create(term="dragon", enabled=False)
    response = submit(paid_api, prompt="a dragon over the sea")
    assert response.status_code == 202, response.content
    assert Job.objects.filter(user=alice).count() == 1
    assert not ModerationFlag.objects.exists()


@pytest.mark.django_db
def test_the_create_page_and_again_are_refused_too(client, paid_api, alice, served):
    first = submit(paid_api, prompt="a lighthouse at dawn")
    assert first.status_code == 202
    held = first.json()["credits_held"]
    BlockedTerm.objects.create(term="lighthouse")
    client.force_login(alice)

    page = client.post(
        reverse("create"),
        {"model": "test-sd1", "prompt": "another Lighthouse", "image": SimpleUploadedFile("in.png", png_bytes())},
    )
    assert page.status_code == 400
    assert b"does not accept" in page.content

    again = client.post(reverse("job_again", args=[first.json()["id"]]), follow=True)
    assert again.redirect_chain[-1][0] == reverse("job", args=[first.json()["id"]])
    assert b"refused by the content rules" in again.content
    assert Job.objects.filter(user=alice).count() == 1
    assert balance_of(user=alice) == 100 - held
    assert ModerationFlag.objects.filter(stage="prompt").count() == 2


def no_shouting(*, field: str, text: str) -> str | None:
    """A deployment's own prompt check (MODERATION_PROMPT_CHECKS)."""
    return "shouting" if text.isupper() else None


@pytest.mark.django_db
def test_a_deployment_plugs_in_its_own_prompt_checks(paid_api, alice, served, settings):
    settings.MODERATION_PROMPT_CHECKS = ["tests.test_moderation.no_shouting"]
    BlockedTerm.objects.create(term="dragon")  # the default check is not in the list
    shouted = submit(paid_api, prompt="A HARBOUR AT NIGHT")
    assert shouted.status_code == 400 and shouted.json()["error"]["code"] == "moderated"
    assert ModerationFlag.objects.get().label == "shouting"
    assert submit(paid_api, prompt="a dragon").status_code == 202


def test_a_prompt_check_that_does_not_import_stops_the_start():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "MODERATION_PROMPT_CHECKS": "no.such.check"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "MODERATION_PROMPT_CHECKS" in result.stderr


# --- The admin -----------------------------------------------------------------------


@pytest.mark.django_db
def test_staff_add_a_rule_in_the_admin_and_it_applies_to_the_next_submit(client, charlie, paid_api, alice, served):
    assert submit(paid_api, prompt="a Kraken in the bay").status_code == 202
    client.force_login(charlie)
    added = client.post(
        reverse("admin:generation_blockedterm_add"), {"term": "  kraken ", "enabled": "on", "note": "sea monsters"}
    )
    assert added.status_code == 302, added.content
    rule = BlockedTerm.objects.get()
    assert (rule.term, rule.created_by, rule.note) == ("kraken", charlie, "sea monsters")
    duplicate = client.post(reverse("admin:generation_blockedterm_add"), {"term": "KRAKEN", "enabled": "on"})
    assert duplicate.status_code == 200 and BlockedTerm.objects.count() == 1

    refused = submit(paid_api, prompt="a Kraken in the bay")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "moderated"

    review = client.get(reverse("admin:generation_moderationflag_changelist") + "?reviewed=no")
    assert review.status_code == 200 and b"blocked term: kraken" in review.content
    flag = ModerationFlag.objects.get()
    client.post(
        reverse("admin:generation_moderationflag_changelist"),
        {"action": "mark_reviewed", "_selected_action": [flag.pk]},
    )
    flag.refresh_from_db()
    assert flag.reviewed_by == charlie and flag.reviewed_at is not None
    assert client.get(reverse("admin:generation_moderationflag_add")).status_code == 403


# --- Pictures, on the worker ---------------------------------------------------------


@pytest.mark.one_engine
@pytest.mark.django_db(transaction=True)
def test_a_flagged_picture_is_never_stored_and_its_job_fails_moderated_with_the_hold_released(
    paid_api, alice, start_worker
):
    start_worker(REAL_WORKER_MODEL, MODERATION_IMAGE_MODEL=CLASSIFIER, MODERATION_THRESHOLD=FLAG_EVERYTHING)
    wait_for(lambda: REAL_WORKER_MODEL in available_slugs(), timeout=90, message="the worker")
    response = submit(paid_api, model=REAL_WORKER_MODEL, num_images=2)
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]

    job = wait_for(lambda: Job.objects.filter(id=job_id, status__in=Job.FINISHED).first(), timeout=120, message="job")
    assert (job.status, job.error_code) == ("failed", "moderated")
    assert "flagged" in job.error and job.credits_charged is None
    assert not job.images.exists()
    assert_no_result_on_disk(job)
    assert_books_balance(alice, granted=100)
    assert balance_of(user=alice) == 100
    flags = list(ModerationFlag.objects.filter(job=job).order_by("image_index"))
    assert [(f.stage, f.label, f.image_index, f.user_id) for f in flags] == [
        ("image", "nsfw", 0, alice.id),
        ("image", "nsfw", 1, alice.id),
    ]
    assert all(0 <= f.score <= 1 for f in flags)
    shown = paid_api.get(f"/api/v1/jobs/{job_id}").json()
    assert (shown["status"], shown["error_code"], shown["images"]) == ("failed", "moderated", [])


@pytest.mark.one_engine
@pytest.mark.django_db(transaction=True)
def test_with_a_threshold_no_score_reaches_the_same_job_succeeds(paid_api, alice, start_worker):
    start_worker(REAL_WORKER_MODEL, MODERATION_IMAGE_MODEL=CLASSIFIER, MODERATION_THRESHOLD=FLAG_NOTHING)
    wait_for(lambda: REAL_WORKER_MODEL in available_slugs(), timeout=90, message="the worker")
    response = submit(paid_api, model=REAL_WORKER_MODEL, num_images=2)
    assert response.status_code == 202, response.content

    job = wait_for(
        lambda: Job.objects.filter(id=response.json()["id"], status__in=Job.FINISHED).first(),
        timeout=120,
        message="job",
    )
    assert job.status == "succeeded", job.error
    assert job.images.count() == 2 and all(Path(image.file.path).is_file() for image in job.images.all())
    assert not ModerationFlag.objects.exists()
    assert_books_balance(alice, granted=100)


# No transaction commits here, so no task is sent: the test runs the
# worker's job_run in this process, as tests/test_batching.py does.
@pytest.mark.django_db
def test_a_flagged_job_in_a_batch_fails_alone_and_its_companion_is_stored_and_charged(
    paid_api, alice, served, settings, monkeypatch
):
    import workers.services
    from workers.moderation import ImageFlag

    settings.JOB_BATCH_MAX = 4
    ids = [submit(paid_api, prompt=f"picture {i}", seed=i).json()["id"] for i in range(2)]

    def verdict(results: dict) -> dict:
        assert set(map(str, results)) == set(ids)  # one check for the whole batch
        return {key: [ImageFlag(index=0, label="nsfw", score=0.97)] if str(key) == ids[1] else [] for key in results}

    monkeypatch.setattr(workers.services, "screen", verdict)
    assert workers.services.job_run(job_id=ids[0]) == "succeeded,moderated"

    kept, flagged = (Job.objects.get(id=job_id) for job_id in ids)
    assert (kept.status, kept.batch_size, kept.images.count()) == ("succeeded", 2, 1)
    assert kept.credits_charged == kept.credits_held
    assert (flagged.status, flagged.error_code, flagged.images.count()) == ("failed", "moderated", 0)
    assert_no_result_on_disk(flagged)
    flag = ModerationFlag.objects.get()
    assert (flag.job_id, flag.label, flag.score, flag.image_index) == (flagged.id, "nsfw", 0.97, 0)
    assert_books_balance(alice, granted=100)


@pytest.mark.django_db
def test_a_check_that_fails_retries_the_job_instead_of_storing_it_unchecked(paid_api, served, monkeypatch):
    import workers.services
    from workers.errors import ErrorKind, WorkerError

    job_id = submit(paid_api).json()["id"]

    def broken(results: dict) -> dict:
        raise WorkerError(ErrorKind.TRANSIENT, "image moderation failed: the model could not load")

    monkeypatch.setattr(workers.services, "screen", broken)
    assert workers.services.job_run(job_id=job_id) == "requeued"
    job = Job.objects.get(id=job_id)
    assert (job.status, job.images.count()) == ("queued", 0)
    assert not (Path(django_settings.MEDIA_ROOT) / "results" / str(job.user_id) / job_id).exists()


@pytest.mark.django_db
def test_live_previews_are_off_while_the_image_check_is_on(paid_api, served, settings, monkeypatch, test_checkpoints):
    import workers.progress
    import workers.services

    settings.JOB_BATCH_MAX = 1
    settings.MODERATION_THRESHOLD = 1.01
    sent: list[str] = []
    # Previews go out from the step relay (progress events from generation.services).
    monkeypatch.setattr(workers.progress, "job_send", lambda job_id, message: sent.append(message["type"]))
    for model_dir in ["", CLASSIFIER]:
        settings.MODERATION_IMAGE_MODEL = model_dir
        job_id = submit(paid_api, steps=10).json()["id"]  # 6 denoising steps: a preview at step 4
        assert workers.services.job_run(job_id=job_id) == "succeeded"
        assert sent == (["preview"] if not model_dir else []), model_dir
        sent.clear()


# --- The classifier itself -----------------------------------------------------------


PICTURES = [Image.new("RGB", (128, 96), color) for color in [(200, 30, 30), (30, 200, 30), (30, 30, 200)]]


def test_the_classifier_flags_every_picture_at_threshold_0_and_none_above_1(test_checkpoints, settings):
    from workers.moderation import screen

    settings.MODERATION_IMAGE_MODEL = CLASSIFIER
    settings.MODERATION_THRESHOLD = 0.0
    flags = screen({"a": PICTURES[:2], "b": PICTURES[2:]})
    assert [(f.index, f.label) for f in flags["a"]] == [(0, "nsfw"), (1, "nsfw")]
    assert [(f.index, f.label) for f in flags["b"]] == [(0, "nsfw")]
    assert all(0 < f.score < 1 for f in flags["a"] + flags["b"])

    settings.MODERATION_THRESHOLD = 1.01
    assert screen({"a": PICTURES[:2], "b": PICTURES[2:]}) == {"a": [], "b": []}
    settings.MODERATION_THRESHOLD = 0.0
    settings.MODERATION_IMAGE_LABELS = ["violence"]  # not flagged: the labels it has are normal and nsfw
    assert screen({"a": PICTURES}) == {"a": []}


def test_without_weights_the_check_is_skipped_and_said_once(test_checkpoints, settings, monkeypatch, caplog):
    import workers.moderation

    monkeypatch.setattr(workers.moderation, "_said_off", set())
    settings.MODERATION_IMAGE_MODEL = "test/no-such-classifier"
    with caplog.at_level(logging.WARNING, logger="workers.moderation"):
        for _ in range(3):
            assert workers.moderation.screen({"a": PICTURES}) == {"a": []}
        settings.MODERATION_IMAGE_MODEL = ""
        assert workers.moderation.screen({"a": PICTURES}) == {"a": []}
        assert workers.moderation.screen({"a": PICTURES}) == {"a": []}
    said = [record.getMessage() for record in caplog.records if "image moderation is off" in record.getMessage()]
    assert len(said) == 2, said  # once per reason: no weights there, none configured


def test_a_worker_refuses_a_model_without_the_flagged_labels(test_checkpoints, settings):
    from workers.moderation import check_setup

    settings.MODERATION_IMAGE_MODEL = CLASSIFIER
    settings.MODERATION_IMAGE_LABELS = ["violence"]
    with pytest.raises(ImproperlyConfigured, match="normal, nsfw"):
        check_setup()
    settings.MODERATION_IMAGE_LABELS = ["NSFW"]
    check_setup()  # any case


@pytest.mark.parametrize("value", ["high", "-0.1", "nan"])
def test_a_bad_threshold_fails_loudly_at_start(value):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", "MODERATION_THRESHOLD": value},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "MODERATION_THRESHOLD" in result.stderr
