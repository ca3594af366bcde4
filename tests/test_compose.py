"""docker-compose.yml describes the production-like stack. No Docker engine
runs here, so this checks the file's structure rather than starting it."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


def test_the_stack_has_its_services_wired_to_postgres_and_redis():
    stack = yaml.safe_load(COMPOSE.read_text())
    services = stack["services"]
    assert {"db", "redis", "web", "worker", "migrate", "housekeeping"} <= set(services)
    assert "-B" in services["housekeeping"]["command"]  # Celery beat runs the job reaper
    for name in ("web", "worker", "migrate", "housekeeping"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert "SECRET_KEY" in env
    assert services["worker"]["build"]["args"]["REQUIREMENTS"] == "worker"
    assert "celery" in services["worker"]["command"]
    assert services["worker"]["environment"]["WORKER_CHECKPOINTS"].startswith("${WORKER_CHECKPOINTS")
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
