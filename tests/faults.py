"""Shared pieces of the fault tests: a long job, the books check."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile

from billing.models import LedgerEntry
from billing.selectors import balance_of
from generation.models import Job
from tests.helpers import png_bytes

# Workers of the fault tests wait after each step (a stand-in for a slow
# device): their jobs stay running for seconds while costing the CPU next to
# nothing, so the tests beside them keep the cores.
SLOW_STEPS = {"WORKER_STEP_DELAY_MS": "250"}


def long_job(api, model: str = "test-sd1-alt", *, steps: int = 40, side: int = 128) -> str:
    """Submit a job that runs for several seconds on a worker started with
    SLOW_STEPS (40 steps: about 10 s)."""
    response = api.post(
        "/api/v1/img2img",
        {
            "model": model,
            "prompt": "a harbour",
            "steps": steps,
            "strength": 1.0,
            "width": side,
            "height": side,
            "image": SimpleUploadedFile("in.png", png_bytes()),
        },
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


def assert_books_balance(user, granted: int) -> None:
    """Nothing lost, nothing charged twice, nothing held: every job's hold is
    resolved exactly once (captured if it succeeded, released otherwise) and
    the balance is what was granted minus what succeeded jobs were charged."""
    jobs = list(Job.objects.filter(user=user))
    for job in jobs:
        assert job.is_finished, (job.id, job.status)
        hold = LedgerEntry.objects.get(reference=job.hold_ref)
        kinds = list(LedgerEntry.objects.filter(resolves=hold).values_list("kind", flat=True))
        assert kinds == (["capture"] if job.status == "succeeded" else ["release"]), (job.id, job.status, kinds)
    charged = sum(job.credits_charged or 0 for job in jobs)
    assert balance_of(user=user) == granted - charged
