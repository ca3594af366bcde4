"""docker-compose.yml describes the production-like stack. No Docker engine
runs here, so this checks the file's structure rather than starting it."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


def test_the_stack_has_its_services_wired_to_postgres_and_redis():
    stack = yaml.safe_load(COMPOSE.read_text())
    services = stack["services"]
    assert {"db", "redis", "web", "worker", "migrate", "housekeeping", "beat"} <= set(services)
    for name in ("web", "worker", "migrate", "housekeeping", "beat"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert "SECRET_KEY" in env
    assert services["worker"]["build"]["args"]["REQUIREMENTS"] == "worker"
    assert "celery" in services["worker"]["command"]
    assert services["worker"]["environment"]["WORKER_CHECKPOINTS"].startswith("${WORKER_CHECKPOINTS")
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_beat_is_its_own_restarted_service_and_no_worker_embeds_it():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "portal", "beat"]
    for name, service in services.items():
        command = service.get("command") or []
        assert "-B" not in command and "--beat" not in command, name
        if name not in {"migrate"}:
            assert service.get("restart") in {"unless-stopped", "always"}, name


def test_gpu_workers_keep_compiled_kernels_and_batch_across_people():
    worker = yaml.safe_load(COMPOSE.read_text())["services"]["worker"]
    env = worker["environment"]
    assert env["WORKER_SPEEDUPS"] == "${WORKER_SPEEDUPS:-auto}"
    assert env["JOB_BATCH_MAX"].startswith("${JOB_BATCH_MAX")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == "/data/compile-cache"
    assert "compile-cache:/data/compile-cache" in worker["volumes"]
