"""Prometheus metrics counted where things happen: job events, reaper
actions, webhook attempts. Web and worker processes both count here.

Every process tree that forks (uvicorn --workers, Celery's prefork pool)
sets PROMETHEUS_MULTIPROC_DIR before it starts: prometheus_client then keeps
each process's values in a file of that folder, so a pool process that dies
or is replaced loses no count, and one scrape sums them all. The web tier
serves them at /metrics (with the figures read from the database and Redis
at scrape time, portal.metrics); a worker's main process serves its own on
WORKER_METRICS_PORT (workers.boot).

Figures that are state rather than events (queue depth, workers online,
credits in the ledger) are read at scrape time instead, so they are right
whichever process changed them and survive every restart.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Seconds: queue waits run from instant to an hour; runs from a turbo model
# on a GPU to a big batch on a CPU.
WAIT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RUN_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)

JOB_EVENTS = Counter(
    "portal_job_events_total",
    "Job lifecycle events (submitted, started, succeeded, failed, canceled, retried, ...) by model and mode.",
    ["event", "model", "mode"],
)
JOB_QUEUE_WAIT = Histogram(
    "portal_job_queue_wait_seconds",
    "From submit to the moment a worker took the job.",
    ["model", "mode"],
    buckets=WAIT_BUCKETS,
)
JOB_RUN = Histogram(
    "portal_job_run_seconds",
    "From the moment a worker took the job to its result.",
    ["model", "mode"],
    buckets=RUN_BUCKETS,
)
REAPER_ACTIONS = Counter(
    "portal_reaper_actions_total",
    "What the reaper did: jobs requeued or failed after a lost worker, queued jobs timed out, messages resent.",
    ["action"],
)
WEBHOOK_ATTEMPTS = Counter(
    "portal_webhook_attempts_total",
    "Webhook delivery attempts by outcome (delivered, retry, failed, refused).",
    ["outcome"],
)


def job_observed(
    event: str,
    *,
    model: str,
    mode: str,
    queue_wait_seconds: float | None = None,
    run_seconds: float | None = None,
) -> None:
    """Count one job event, and the queue wait or run time it carries."""
    JOB_EVENTS.labels(event=event, model=model, mode=mode).inc()
    if queue_wait_seconds is not None:
        JOB_QUEUE_WAIT.labels(model=model, mode=mode).observe(max(0.0, queue_wait_seconds))
    if run_seconds is not None:
        JOB_RUN.labels(model=model, mode=mode).observe(max(0.0, run_seconds))


def reaper_observed(counts: dict[str, int]) -> None:
    for action, count in counts.items():
        if count:
            REAPER_ACTIONS.labels(action=action).inc(count)


def webhook_observed(outcome: str) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome=outcome).inc()
