"""What the public status page, the create page and the staff dashboard say
about each model: online or not, its queue, and the expected wait for a job
submitted now, from recent run times.

Definitions (docs/operator/monitoring.md, "Status page", says the same):

- A model is *online* when at least one live worker heartbeat serves it
  (catalog.availability), and *warm* when one of them holds it loaded.
- Its *typical run* is the median run time (started_at -> finished_at) of
  its last RECENT_RUNS succeeded jobs that finished within RECENT_RUN_DAYS
  (basis "model"). A model with no such job borrows the median over the
  recent runs of the enabled models of its pipeline family (basis
  "family"); with none either, the typical run is unknown (None).
- Its *expected wait* is the time until a job submitted now is done:
  typical x (jobs_ahead // workers + 1), where jobs_ahead are its queued and
  running jobs and workers the live workers that serve it. So each full
  round of the workers takes one typical run, and the job's own run is the
  last round. Unknown (None) when the model is offline or its typical run
  is unknown. It ignores batching and workers shared between models, which
  makes it an estimate, not a promise.

Everything comes from three queries and one Redis read however many jobs
there are (model_statuses); the public pages read it through a short cache
(status_snapshot).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from catalog.availability import live_workers
from catalog.models import Checkpoint
from generation.models import Job

RECENT_RUNS = 20
RECENT_RUN_DAYS = 7
SNAPSHOT_CACHE_KEY = "status:snapshot:v1"


@dataclass(frozen=True)
class ModelStatus:
    slug: str
    name: str
    family: str
    online: bool
    warm: bool
    workers: int
    queue_length: int
    running: int
    typical_run_seconds: float | None
    expected_wait_seconds: float | None
    estimate_basis: str | None  # "model", "family" or None (no recent runs)


def expected_wait(*, typical: float | None, ahead: int, workers: int) -> float | None:
    """Seconds until a job submitted now is done (module docstring)."""
    if typical is None or workers < 1:
        return None
    return typical * (ahead // workers + 1)


def typical_runs(checkpoints: list[Checkpoint], *, now: datetime | None = None) -> dict[int, tuple[float, str]]:
    """{checkpoint id: (typical run seconds, basis)} for those that have one:
    one query (a window over the recent succeeded jobs of these checkpoints)."""
    since = (now or timezone.now()) - timedelta(days=RECENT_RUN_DAYS)
    rows = (
        Job.objects.filter(
            checkpoint__in=checkpoints, status=Job.Status.SUCCEEDED, started_at__isnull=False, finished_at__gte=since
        )
        .annotate(recent=Window(RowNumber(), partition_by=F("checkpoint_id"), order_by=F("finished_at").desc()))
        .filter(recent__lte=RECENT_RUNS)
        .order_by()
        .values_list("checkpoint_id", "started_at", "finished_at")
    )
    runs: dict[int, list[float]] = defaultdict(list)
    for checkpoint_id, started_at, finished_at in rows:
        runs[checkpoint_id].append(max(0.0, (finished_at - started_at).total_seconds()))
    by_family: dict[str, list[float]] = defaultdict(list)
    for checkpoint in checkpoints:
        by_family[checkpoint.family].extend(runs.get(checkpoint.id, ()))
    typical: dict[int, tuple[float, str]] = {}
    for checkpoint in checkpoints:
        if runs.get(checkpoint.id):
            typical[checkpoint.id] = (statistics.median(runs[checkpoint.id]), "model")
        elif by_family[checkpoint.family]:
            typical[checkpoint.id] = (statistics.median(by_family[checkpoint.family]), "family")
    return typical


def active_counts(checkpoints: list[Checkpoint]) -> dict[tuple[int, str], int]:
    """{(checkpoint id, "queued" | "running"): jobs}: one grouped query."""
    rows = (
        Job.objects.filter(checkpoint__in=checkpoints, status__in=Job.ACTIVE)
        .order_by()
        .values_list("checkpoint_id", "status")
        .annotate(count=Count("pk"))
    )
    return {(checkpoint_id, status): count for checkpoint_id, status, count in rows}


def model_statuses(*, workers: list[dict] | None = None) -> list[ModelStatus]:
    """Every enabled checkpoint's status, in catalog order: three queries and
    one Redis read (none when `workers`, the live heartbeats, are given)."""
    workers = live_workers() if workers is None else workers
    checkpoints = list(Checkpoint.objects.filter(enabled=True).only("id", "slug", "name", "family"))
    typical = typical_runs(checkpoints)
    counts = active_counts(checkpoints)
    statuses = []
    for checkpoint in checkpoints:
        serving = [worker for worker in workers if checkpoint.slug in worker.get("serves", ())]
        queued = counts.get((checkpoint.id, Job.Status.QUEUED), 0)
        running = counts.get((checkpoint.id, Job.Status.RUNNING), 0)
        run, basis = typical.get(checkpoint.id, (None, None))
        statuses.append(
            ModelStatus(
                slug=checkpoint.slug,
                name=checkpoint.name,
                family=checkpoint.family,
                online=bool(serving),
                warm=any(checkpoint.slug in worker.get("loaded", ()) for worker in serving),
                workers=len(serving),
                queue_length=queued,
                running=running,
                typical_run_seconds=None if run is None else round(run, 1),
                expected_wait_seconds=_rounded(
                    expected_wait(typical=run, ahead=queued + running, workers=len(serving))
                ),
                estimate_basis=basis,
            )
        )
    return statuses


def status_snapshot() -> dict:
    """The public status figures (the shape of /status.json), computed at
    most once per STATUS_CACHE_SECONDS: the page is public and cheap to ask
    for, so a burst of requests costs one computation."""
    return cache.get_or_set(SNAPSHOT_CACHE_KEY, _snapshot, settings.STATUS_CACHE_SECONDS)


def _snapshot() -> dict:
    workers = live_workers()
    return {
        "models": [asdict(status) for status in model_statuses(workers=workers)],
        "workers_online": sum(1 for worker in workers if worker.get("serves")),
        "generated_at": timezone.now().isoformat(),
    }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def wait_label(seconds: float | None) -> str:
    """ "about 40 s", "about 3 min", "about 1 h 5 min"; "unknown" for None."""
    if seconds is None:
        return "unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"about {max(seconds, 1)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min" if minutes else f"about {hours} h"
