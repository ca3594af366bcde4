"""docker-compose.yml, the production stack, as Docker Compose itself parses it.

No Docker engine runs here, but `docker compose config` needs none: it
resolves the file (anchors, ${...} from the env file, profiles) and prints
the result. .ci/run installs the Compose v2 plugin and Debian's caddy when
they are missing (deploy/Caddyfile goes through `caddy adapt`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from workers.gpu_claim import gpu_claim, gpu_count

# The compose file and the proxy's config, no database (PostgreSQL pass only).
pytestmark = pytest.mark.one_engine

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / ".env.example"
LONG_RUNNING = {"proxy", "db", "redis", "web", "worker", "housekeeping", "beat"}
APP = {"migrate", "web", "worker", "housekeeping", "beat"}


def compose_config(*args: str, env_file: Path = EXAMPLE) -> subprocess.CompletedProcess:
    docker = shutil.which("docker")
    assert docker, "the docker CLI with its compose plugin is needed (see .ci/run)"
    return subprocess.run(
        [
            docker,
            "compose",
            "--env-file",
            str(env_file),
            "-f",
            str(ROOT / "docker-compose.yml"),
            *args,
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        # Only the env file: compose would let the shell's variables win.
        env={"PATH": os.environ["PATH"], "HOME": str(Path.home())},
    )


def parsed(*args: str, env_file: Path = EXAMPLE) -> dict:
    result = compose_config(*args, env_file=env_file)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def stack() -> dict:
    return parsed("--profile", "monitoring")


def test_the_stack_has_every_service(stack):
    assert set(stack["services"]) == LONG_RUNNING | {"migrate", "prometheus"}
    # Outside the monitoring profile, Prometheus is not started.
    assert "prometheus" not in parsed()["services"]


def test_every_long_running_service_restarts_and_reports_its_health(stack):
    services = stack["services"]
    for name in LONG_RUNNING | {"prometheus"}:
        assert services[name]["restart"] == "unless-stopped", name
        assert services[name]["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name
    assert services["migrate"]["restart"] == "no"
    assert services["db"]["healthcheck"]["test"][1].startswith("pg_isready")
    assert "redis-cli ping" in services["redis"]["healthcheck"]["test"][1]
    assert services["web"]["healthcheck"]["test"][-1] == "/readyz"
    assert "inspect ping -d celery@$$HOSTNAME" in services["worker"]["healthcheck"]["test"][1]
    assert "-d housekeeping@$$HOSTNAME" in services["housekeeping"]["healthcheck"]["test"][1]
    # /readyz wants a live GPU worker: the proxy must not wait for it.
    assert services["proxy"]["depends_on"]["web"]["condition"] == "service_started"


def test_only_the_proxy_publishes_ports(stack):
    services = stack["services"]
    published = {name: {p["target"] for p in s.get("ports", [])} for name, s in services.items()}
    assert published.pop("proxy") == {80, 443}
    assert all(not ports for ports in published.values()), published
    assert services["web"]["expose"] == ["8000"]
    assert services["worker"]["expose"] == ["9808"]
    assert services["worker"]["environment"]["WORKER_METRICS_PORT"] == "9808"


def test_gpu_workers_reserve_gpus_and_scale(stack):
    worker = stack["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    # --scale worker=N: no fixed name or host port, and each replica takes its
    # own GPU (a count of 1 would be GPU 0 for all of them).
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][:3] == ["python", "-m", "workers.gpu_claim"]
    assert worker["command"][3:7] == ["celery", "-A", "portal", "worker"]
    assert {v["source"]: v["target"] for v in worker["volumes"]}["gpu-locks"] == worker["environment"]["GPU_LOCK_DIR"]
    assert worker["build"]["args"]["REQUIREMENTS"] == "worker"
    assert worker["environment"]["TORCHINDUCTOR_CACHE_DIR"] == "/data/compile-cache"


def test_state_lives_in_named_volumes_and_redis_appends(stack):
    services = stack["services"]

    def mounts(name):
        return {v["source"]: v["target"] for v in services[name]["volumes"] if v["type"] == "volume"}

    assert mounts("db")["pgdata"] == "/var/lib/postgresql/data"
    assert mounts("redis")["redisdata"] == "/data"
    assert services["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"]
    for name in APP:
        assert mounts(name)["media"] == services[name]["environment"]["MEDIA_ROOT"] == "/data/media", name
    assert {"pgdata", "redisdata", "media", "models", "caddy-data"} <= set(stack["volumes"])


def test_beat_is_its_own_service_and_no_worker_embeds_it(stack):
    for name, service in stack["services"].items():
        command = service.get("command") or []
        assert "-B" not in command and "--beat" not in command, name
    assert stack["services"]["beat"]["command"][:4] == ["celery", "-A", "portal", "beat"]


def test_only_the_housekeeping_worker_is_asked_for_housekeeping_work(stack):
    housekeeping = stack["services"]["housekeeping"]["command"]
    assert housekeeping[housekeeping.index("-Q") + 1].split(",") == ["housekeeping", "celery"]
    assert "-Q" not in stack["services"]["worker"]["command"]  # its checkpoints' queues, added at start


def test_secrets_come_from_the_env_file_and_are_required(tmp_path):
    raw = (ROOT / "docker-compose.yml").read_text()
    values = {
        "SECRET_KEY": "sk-marker-1",
        "POSTGRES_PASSWORD": "pgmarker2",
        "REDIS_PASSWORD": "redismarker3",
        "ALLOWED_HOSTS": "portal.test",
        "METRICS_TOKEN": "tok-marker-4",
    }
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    services = parsed(env_file=env_file)["services"]
    for name in APP:
        env = services[name]["environment"]
        assert env["SECRET_KEY"] == "sk-marker-1", name
        assert env["DATABASE_URL"] == "postgres://portal:pgmarker2@db:5432/portal", name
        assert env["REDIS_URL"] == "redis://:redismarker3@redis:6379/0", name
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == "pgmarker2"
    assert "redismarker3" in services["redis"]["command"]
    assert "portal:portal@" not in raw
    # Without one of them, compose refuses and names it.
    for missing in ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items() if k != missing))
        result = compose_config(env_file=env_file)
        assert result.returncode != 0 and missing in result.stderr, missing


def test_the_example_env_file_names_every_variable_the_stack_reads():
    example = EXAMPLE.read_text()
    for name in ("SECRET_KEY", "ALLOWED_HOSTS", "DOMAIN", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "METRICS_TOKEN"):
        assert f"\n{name}=" in example, name
    for name in ("STRIPE_SECRET_KEY", "EMAIL_URL", "MEDIA_STORAGE", "AWS_STORAGE_BUCKET_NAME", "AWS_S3_ENDPOINT_URL"):
        assert f"{name}=" in example, name
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()  # never baked into the image


def test_the_app_trusts_forwarded_addresses_from_the_edge_network_only(stack):
    services = stack["services"]
    (subnet,) = [c["subnet"] for c in stack["networks"]["edge"]["ipam"]["config"]]
    assert set(services["proxy"]["networks"]) == {"edge"}
    assert set(services["web"]["networks"]) == {"edge", "backend"}
    for name in LONG_RUNNING - {"proxy", "web"}:
        assert "edge" not in services[name]["networks"], name
    for name in APP:
        assert services[name]["environment"]["TRUSTED_PROXIES"] == subnet, name
        assert services[name]["environment"]["BEHIND_TLS_PROXY"] == "true", name


def test_a_second_host_reaches_db_and_redis_on_the_private_address_only(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text(EXAMPLE.read_text() + "PRIVATE_BIND_IP=10.9.8.7\n")
    services = parsed("-f", str(ROOT / "deploy/compose.multihost.yml"), env_file=env_file)["services"]
    assert [(p["host_ip"], p["target"]) for p in services["db"]["ports"]] == [("10.9.8.7", 5432)]
    assert [(p["host_ip"], p["target"]) for p in services["redis"]["ports"]] == [("10.9.8.7", 6379)]


def _routes(routes):
    for route in routes:
        yield route
        for handler in route["handle"]:
            yield from _routes(handler.get("routes", []))


def _handlers(routes):
    # A site with a host name nests its routes in a subroute handler.
    for route in routes:
        for handler in route["handle"]:
            yield handler
            yield from _handlers(handler.get("routes", []))


def test_the_proxy_config_limits_bodies_forwards_to_web_and_sets_a_request_id(stack):
    caddy = shutil.which("caddy")
    if caddy is None:
        if os.environ.get("CI"):
            pytest.fail("caddy is missing: apt-get install caddy (.ci/run does)")
        pytest.skip("caddy is not installed (apt-get install caddy)")
    proxy = stack["services"]["proxy"]
    env = {**os.environ, **proxy["environment"]}
    result = subprocess.run(
        [caddy, "adapt", "--config", str(ROOT / "deploy/Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    servers = json.loads(result.stdout)["apps"]["http"]["servers"]
    # .env.example names a DOMAIN: HTTPS on 443, with a certificate.
    (site,) = [s for s in servers.values() if s["listen"] == [":443"]]
    handlers = list(_handlers(site["routes"]))
    (body,) = [h for h in handlers if h["handler"] == "request_body"]
    assert body["max_size"] >= 20 * 1024 * 1024 + 256 * 1024  # UPLOAD_MAX_BYTES' default + the app's margin
    (proxy_handler,) = [h for h in handlers if h["handler"] == "reverse_proxy"]
    assert proxy_handler["upstreams"] == [{"dial": "web:8000"}]
    (request_id,) = [h["request"]["set"] for h in handlers if h["handler"] == "headers"]
    assert request_id == {"X-Request-Id": ["{http.request.uuid}"]}
    # /metrics is refused at the edge (Prometheus scrapes web inside the network).
    (refused,) = [h for h in handlers if h["handler"] == "static_response"]
    assert refused["status_code"] == 404
    assert any(route.get("match") == [{"path": ["/metrics"]}] for route in _routes(site["routes"]))
    # The access log drops secret keys in paths and the presigned media URLs.
    log = json.loads(result.stdout)["logging"]["logs"]
    (fields,) = [entry["encoder"]["fields"] for entry in log.values() if "encoder" in entry]
    assert fields["request>uri"]["filter"] == "regexp" and fields["resp_headers>Location"]["filter"] == "delete"
    # The healthcheck's listener stays inside the container.
    assert any(s["listen"] == ["127.0.0.1:2020"] for s in servers.values())
    assert "2020/healthz" in proxy["healthcheck"]["test"][-1]


def test_each_worker_replica_claims_its_own_gpu(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    assert gpu_count(str(dev)) == 2
    locks = str(tmp_path / "locks")
    first, first_fd = gpu_claim(lock_dir=locks, count=2)
    second, second_fd = gpu_claim(lock_dir=locks, count=2)
    assert (first, second) == (0, 1)
    with pytest.raises(RuntimeError, match="all 2 GPUs are held"):
        gpu_claim(lock_dir=locks, count=2)
    os.close(first_fd)  # that worker died: its GPU is free again
    again, again_fd = gpu_claim(lock_dir=locks, count=2)
    assert again == 0
    os.close(second_fd)
    os.close(again_fd)


def test_processes_share_metrics_in_a_fresh_folder_and_workers_serve_theirs(stack):
    services = stack["services"]
    for name in ("web", "worker", "housekeeping"):
        env = services[name]["environment"]
        assert env["PROMETHEUS_MULTIPROC_DIR"] == "/run/metrics", name
        # A tmpfs: emptied at each start, as prometheus_client's multiprocess mode needs.
        assert "/run/metrics" in services[name]["tmpfs"], name
    for name in ("worker", "housekeeping"):
        env = services[name]["environment"]
        assert (env["WORKER_METRICS_PORT"], env["WORKER_METRICS_ADDRESS"]) == ("9808", "0.0.0.0"), name  # noqa: S104 (inside the network)
        assert "9808" in services[name]["expose"] and not services[name].get("ports"), name
    assert "METRICS_TOKEN" in (ROOT / ".env.example").read_text()


def test_web_logs_the_proxy_s_request_id(stack):
    assert stack["services"]["web"]["environment"]["LOG_TRUST_REQUEST_ID"] == "true"
    assert "X-Request-ID" in (ROOT / "deploy" / "Caddyfile").read_text()
