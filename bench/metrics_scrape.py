# ruff: noqa: E501 (SQL statements)
"""Benchmark: what a /metrics scrape and the status figures cost as the
books grow. The state part of /metrics (portal.metrics.StateCollector)
aggregates the jobs and ledger tables on every scrape, and the status page
(generation.estimates.model_statuses) reads recent run times; this times
both at growing table sizes, against the same reads on an empty database
measured in the same run (the baseline).

    .venv/bin/python bench/metrics_scrape.py
    SIZES=10000,100000 .venv/bin/python bench/metrics_scrape.py

DATABASE_URL defaults to postgres://postgres@127.0.0.1:5432/portal_bench_metrics
(created, emptied and migrated here); REDIS_URL to redis://127.0.0.1:6379/8.
Rows are made with generate_series in SQL: each job one of 19 catalog
models and 1,000 people, finished over the last 30 days (1% queued, 1%
running, 5% failed), each with a hold and its capture or release in the
ledger (3 ledger rows per job with the grants). Prints the median of 5
runs of each read, in ms, and its ratio to the empty-database baseline.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._servers import ensure_database  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench_metrics")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/8")
os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 50)
os.environ.pop("DEBUG", None)

SIZES = [int(size) for size in os.environ.get("SIZES", "10000,100000,1000000").split(",")]
RUNS = 5
PEOPLE = 1000


def reset() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    base, _, name = url.rpartition("/")
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    ensure_database(url)


def setup() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("seed_catalog", verbosity=0)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounts_user (password, is_superuser, username, first_name, last_name, email, is_staff, "
            "is_active, date_joined, queue_weight) SELECT '', false, 'p' || i, '', '', 'p' || i || '@example.com', "
            "false, true, now(), 1 FROM generate_series(1, %s) i",
            [PEOPLE],
        )
        cursor.execute(
            "INSERT INTO billing_creditaccount (user_id, balance, debt, frozen, created_at, updated_at) "
            "SELECT id, 1000000, 0, false, now(), now() FROM accounts_user"
        )


# Job i is submitted at EPOCH + i x SPACING: the largest size spreads over
# the last 30 days, oldest first, so ids and times grow together as in
# production (the running ledger sums rely on it).
SPAN_SECONDS = 30 * 24 * 3600
CLOCK = {
    "epoch": datetime.now(UTC) - timedelta(seconds=SPAN_SECONDS),
    "spacing": SPAN_SECONDS / max(SIZES),
}
CHUNK = 10_000


def grow(start: int, stop: int) -> None:
    """Jobs start+1..stop, with their ledger rows, in chunks so that ledger
    ids follow time closely."""
    for chunk in range(start, stop, CHUNK):
        _grow(chunk, min(chunk + CHUNK, stop))
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def _grow(start: int, stop: int) -> None:
    """Jobs start+1..stop, with their holds and resolutions."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT array_agg(id ORDER BY id) FROM catalog_checkpoint")
        checkpoints = cursor.fetchone()[0]
        cursor.execute("SELECT array_agg(id ORDER BY id) FROM billing_creditaccount")
        accounts = cursor.fetchone()[0]
        cursor.execute("SELECT array_agg(user_id ORDER BY id) FROM billing_creditaccount")
        users = cursor.fetchone()[0]
        cursor.execute(
            """
            INSERT INTO generation_job (id, status, prompt, negative_prompt, strength, steps, guidance_scale, seed,
                num_images, width, height, input_image, credits_held, credits_charged, progress_step, progress_total,
                attempts, lease_expires_at, worker, error_code, error, created_at, started_at, finished_at,
                checkpoint_id, parent_id, user_id, batch_size, webhook_url, expired_at)
            SELECT gen_random_uuid(),
                CASE WHEN i %% 100 = 0 THEN 'queued' WHEN i %% 100 = 1 THEN 'running'
                     WHEN i %% 20 = 2 THEN 'failed' ELSE 'succeeded' END,
                'a castle', '', 0.6, 20, 7, i, 1, 512, 512, 'inputs/x.png', 5,
                CASE WHEN i %% 20 = 2 OR i %% 100 < 2 THEN NULL ELSE 5 END, 12, 12, 1, NULL, '',
                CASE WHEN i %% 20 = 2 THEN 'worker_lost' ELSE '' END, '',
                (%(epoch)s::timestamptz + i * %(spacing)s * interval '1 second'),
                CASE WHEN i %% 100 = 0 THEN NULL ELSE (%(epoch)s::timestamptz + i * %(spacing)s * interval '1 second') + interval '2 s' END,
                CASE WHEN i %% 100 < 2 THEN NULL
                     ELSE (%(epoch)s::timestamptz + i * %(spacing)s * interval '1 second') + (5 + i %% 7) * interval '1 second' END,
                (%(checkpoints)s::bigint[])[1 + i %% array_length(%(checkpoints)s::bigint[], 1)],
                NULL, (%(users)s::bigint[])[1 + i %% %(people)s], 1, '', NULL
            FROM generate_series(%(start)s + 1, %(stop)s) i
            """,
            {"checkpoints": checkpoints, "users": users, "people": PEOPLE, "start": start, "stop": stop, **CLOCK},
        )
        cursor.execute(
            """
            INSERT INTO billing_ledgerentry (account_id, kind, amount, balance_after, reference, shortfall, debt_paid,
                memo, created_at)
            SELECT (%(accounts)s::bigint[])[1 + i %% %(people)s], 'hold', -5, 0, 'bench-hold:' || i, 0, 0, '', (%(epoch)s::timestamptz + i * %(spacing)s * interval '1 second')
            FROM generate_series(%(start)s + 1, %(stop)s) i
            """,
            {"accounts": accounts, "people": PEOPLE, "start": start, "stop": stop, **CLOCK},
        )
        cursor.execute(
            """
            INSERT INTO billing_ledgerentry (account_id, kind, amount, balance_after, reference, resolves_id,
                shortfall, debt_paid, memo, created_at)
            SELECT h.account_id, CASE WHEN n %% 20 = 2 THEN 'release' ELSE 'capture' END,
                CASE WHEN n %% 20 = 2 THEN 5 ELSE 0 END, 0, 'bench-end:' || n, h.id, 0, 0, '', h.created_at + interval '7 s'
            FROM (SELECT id, account_id, created_at, substr(reference, 12)::int AS n FROM billing_ledgerentry
                  WHERE kind = 'hold' AND reference LIKE 'bench-hold:%%'
                    AND substr(reference, 12)::int BETWEEN %(start)s + 1 AND %(stop)s) h
            WHERE n %% 100 >= 2
            """,
            {"start": start, "stop": stop},
        )
        cursor.execute(
            """
            INSERT INTO billing_ledgerentry (account_id, kind, amount, balance_after, reference, shortfall, debt_paid,
                memo, created_at)
            SELECT (%(accounts)s::bigint[])[1 + i %% %(people)s], 'purchase', 500, 0, 'bench-buy:' || i, 0, 0, '', (%(epoch)s::timestamptz + i * %(spacing)s * interval '1 second')
            FROM generate_series(%(start)s + 1, %(stop)s) i WHERE i %% 100 = 50
            """,
            {"accounts": accounts, "people": PEOPLE, "start": start, "stop": stop, **CLOCK},
        )


def median_ms(read) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        read()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure() -> dict[str, float]:
    from prometheus_client import CollectorRegistry, generate_latest

    from billing.selectors import credit_totals, credits_outstanding, ledger_sums
    from generation.estimates import model_statuses
    from generation.selectors import job_counts, queues_waiting
    from portal.metrics import StateCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector())
    started = time.perf_counter()
    ledger_sums()  # folds the rows that settled since the last read (once, not per scrape)
    fold = (time.perf_counter() - started) * 1000
    return {
        "fold (once per growth)": fold,
        "scrape (state part)": median_ms(lambda: generate_latest(registry)),
        "  job_counts": median_ms(job_counts),
        "  queues_waiting": median_ms(queues_waiting),
        "  credit_totals": median_ms(credit_totals),
        "  credits_outstanding": median_ms(credits_outstanding),
        "status figures (uncached)": median_ms(model_statuses),
    }


def main() -> None:
    reset()
    setup()
    baseline = measure()
    print(f"PostgreSQL, {PEOPLE} people, 19 models; median of {RUNS} runs, ms (x baseline: the empty database)")
    print(f"{'jobs':>9} {'ledger rows':>12}  " + "  ".join(f"{name.strip():>26}" for name in baseline))
    print(f"{0:>9} {PEOPLE * 0:>12}  " + "  ".join(f"{value:>18.1f}        " for value in baseline.values()))
    done = 0
    from billing.models import LedgerEntry

    for size in SIZES:
        grow(done, size)
        done = size
        figures = measure()
        ledger = LedgerEntry.objects.count()
        cells = "  ".join(
            f"{value:>12.1f} ({value / max(base, 0.01):>7.1f}x)"
            for value, base in zip(figures.values(), baseline.values(), strict=True)
        )
        print(f"{size:>9} {ledger:>12}  {cells}", flush=True)


if __name__ == "__main__":
    main()
