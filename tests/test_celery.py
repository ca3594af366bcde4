"""The Celery app round-trips through the real Redis broker to a real worker
process started with the project's configuration."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from portal.celery import app
from workers.tasks import ping


def test_a_real_worker_answers_through_redis(celery_worker):
    result = ping.apply_async(queue=celery_worker.queue).get(timeout=90)
    assert result["pong"] is True
    assert result["pid"] != os.getpid(), "the task ran in this process, not in the worker"
    assert celery_worker.proc.poll() is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("task_acks_late", True),
        ("task_reject_on_worker_lost", True),
        ("worker_prefetch_multiplier", 1),
    ],
)
def test_long_job_safety_settings_reach_celery(name, expected):
    assert app.conf[name] == expected


def test_redelivery_waits_longer_than_the_hard_time_limit():
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit
    assert app.conf.broker_transport_options["visibility_timeout"] > app.conf.task_time_limit
    assert app.conf.broker_url == settings.REDIS_URL
