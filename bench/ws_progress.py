"""Benchmark: live progress to many job pages. N (default 1,000) websockets
on /ws/jobs/<id>/ watch one running job while a separate process publishes
its progress the way a worker does (generation.events.job_send: the
per-process sender thread, on the job's Redis channel). Prints figures, not
pass/fail; the goal (issues 11 and 22): event latency p99 < 100 ms at 1,000
sockets, every socket getting each scenario's last step (a socket that lags
gets the latest step, not a backlog: generation.consumers). The job's events
go through generation.fanout whatever the channel layer (LAYERS changes only
what the rest of the site, the support chat, uses).

    .venv/bin/python bench/ws_progress.py
    SOCKETS=200 STACKS="uvicorn (as served),granian" LAYERS=core .venv/bin/python bench/ws_progress.py

Each row takes about a minute at 1,000 sockets. bench/results/ws_progress-cpu.log
holds the runs that chose the portal's settings (before they were applied:
the core layer, channels' database hop per event, compression on) and the
run after.

DATABASE_URL defaults to postgres://postgres@127.0.0.1:5432/portal_bench2
(created and migrated here); REDIS_URL to redis://127.0.0.1:6379/7. The
server runs as the portal serves websockets (scripts/stack.py run, compose:
uvicorn portal.asgi:application, 2 workers here), DEBUG off, HTTPS_ONLY off,
with bench.ws_settings choosing the channel layer (pubsub: the configured
channels_redis.pubsub.RedisPubSubChannelLayer; core: the list-based
channels_redis.core.RedisChannelLayer it replaced).
Each client sends the session cookie and an Origin header, gets the job's
snapshot, then the progress events; every event carries its send time
(time.time() in the publisher) and latency is measured at each client on
arrival. Clients (one asyncio loop, this process), the server, the
publisher, PostgreSQL and Redis all share this machine's cores: the log
says so, and latencies here are an upper bound for a server with cores of
its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._servers import ensure_database, free_port, running_job, stop, wait_ready  # noqa: E402

PY = sys.executable
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.ws_settings"
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench2")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/7")
os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 50)
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
os.environ.setdefault("CHANNELS_PREFIX", "bench:ws")
os.environ["HTTPS_ONLY"] = "false"
os.environ.pop("DEBUG", None)
LOGS = ROOT / "var" / "bench" / "ws_progress"
LOGS.mkdir(parents=True, exist_ok=True)

SOCKETS = int(os.environ.get("SOCKETS", "1000"))
# (name, events, events per second; 0 = back to back)
SCENARIOS = [("10/s x 20", 20, 10.0), ("50/s x 25", 25, 50.0), ("burst x 20", 20, 0.0)]
GOAL_P99_MS = 100.0
DRAIN_SECONDS = 60


def prepare() -> str:
    """A migrated database and one person logged in: their session cookie."""
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from accounts.models import User
    from catalog.seeds import catalog_register_test_checkpoints
    from workers.testweights import build_all

    call_command("migrate", "--noinput", verbosity=0)
    catalog_register_test_checkpoints(build_all(Path(os.environ.get("MODELS_DIR", ROOT / "var" / "models"))))
    user, _ = User.objects.get_or_create(username="bench-ws", defaults={"email": "bench-ws@example.com"})
    client = Client()
    client.force_login(user)
    from django.db import connections

    connections.close_all()
    return client.cookies["sessionid"].value


def new_job() -> str:
    """A running job of the bench's person, and a clean channel layer: each
    server gets a job (a group) of its own, so no subscriber of a server
    stopped before (left in the group when a mass disconnect's group_discard
    fails) is sent to."""
    import redis
    from django.db import connections

    from accounts.models import User

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    for key in client.scan_iter(os.environ["CHANNELS_PREFIX"] + "*"):
        client.delete(key)
    job = running_job(User.objects.get(username="bench-ws"), step=0)
    connections.close_all()
    return str(job.id)


def stacks(port: int) -> dict[str, list[str]]:
    bind = ["--host", "127.0.0.1", "--port", str(port)]
    uvicorn = [PY, "-m", "uvicorn", "portal.asgi:application", *bind, "--workers", "2", "--no-proxy-headers"]
    return {
        # scripts/stack.py run and compose: uvicorn (httptools and uvloop,
        # installed), websocket compression off.
        "uvicorn (as served)": [*uvicorn, "--ws-per-message-deflate", "false"],
        "uvicorn with compression": uvicorn,
        "uvicorn h11 asyncio": [*uvicorn, "--http", "h11", "--loop", "asyncio", "--ws-per-message-deflate", "false"],
        "granian asgi": [PY, "-m", "granian", "--interface", "asgi", "portal.asgi:application", *bind,
                         "--workers", "2"],
    }  # fmt: skip


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --- The publisher (a separate process, like a worker) ----------------------------


def publish(job_id: str, run: str, count: int, rate: float) -> None:
    import django

    django.setup()
    from generation.events import events_flush, job_send

    # The worker's sender is long-lived: open its connections before timing.
    job_send(job_id, {"type": "progress", "run": "warm", "step": 0, "total": count, "sent": time.time()})
    events_flush(10)
    time.sleep(0.5)
    started = time.monotonic()
    for step in range(1, count + 1):
        job_send(job_id, {"type": "progress", "run": run, "step": step, "total": count, "sent": time.time()})
        if rate:
            time.sleep(max(0.0, started + step / rate - time.monotonic()))
    handed = time.monotonic() - started
    events_flush(30)
    # What the parent prints: how long the sender thread took to send them all.
    print(json.dumps({"handed_ms": 1000 * handed, "sent_ms": 1000 * (time.monotonic() - started)}), flush=True)


# --- The clients ------------------------------------------------------------------


class Clients:
    def __init__(self, port: int, job_id: str, cookie: str) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws/jobs/{job_id}/"
        self.origin = f"http://127.0.0.1:{port}"
        self.cookie = cookie
        self.sockets: list = []
        self.readers: list[asyncio.Task] = []
        self.latencies: dict[str, list[tuple[int, float]]] = {}
        self.connect_seconds: list[float] = []
        self.failed: list[str] = []

    async def _open(self, gate: asyncio.Semaphore) -> None:
        from websockets.asyncio.client import connect

        async with gate:
            started = time.monotonic()
            try:
                ws = await connect(
                    self.url, origin=self.origin, additional_headers={"Cookie": f"sessionid={self.cookie}"},
                    open_timeout=60, max_queue=None,
                )  # fmt: skip
                snapshot = json.loads(await asyncio.wait_for(ws.recv(), 60))
                assert snapshot["type"] == "job", snapshot
            except Exception as exc:  # counted and reported
                self.failed.append(repr(exc)[:120])
                return
            self.connect_seconds.append(time.monotonic() - started)
            self.sockets.append(ws)
            self.readers.append(asyncio.create_task(self._read(ws)))

    async def _read(self, ws) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                arrived = time.time()
                message = json.loads(raw)
                if message.get("type") == "progress" and message.get("run") != "warm":
                    self.latencies.setdefault(message["run"], []).append((message["step"], arrived - message["sent"]))

    async def open_all(self, n: int) -> float:
        gate = asyncio.Semaphore(100)
        started = time.monotonic()
        await asyncio.gather(*(self._open(gate) for _ in range(n)))
        return time.monotonic() - started

    async def close_all(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


async def measure(port: int, job_id: str, cookie: str, layer: str) -> dict:
    clients = Clients(port, job_id, cookie)
    opened = await clients.open_all(SOCKETS)
    out = {
        "connected": len(clients.sockets),
        "connect_s": opened,
        "connect_p50_ms": 1000 * pct(clients.connect_seconds, 50),
        "connect_p99_ms": 1000 * pct(clients.connect_seconds, 99),
        "connect_errors": clients.failed[:3],
        "scenarios": {},
    }
    await asyncio.sleep(1)
    env = {**os.environ, "BENCH_CHANNEL_LAYER": layer}
    for index, (name, count, rate) in enumerate(SCENARIOS):
        run = f"r{index}"
        proc = await asyncio.create_subprocess_exec(
            PY,
            __file__,
            "publish",
            job_id,
            run,
            str(count),
            str(rate),
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            stdout, _ = await asyncio.wait_for(proc.communicate(), 120)
            publisher = json.loads(stdout.decode().strip().splitlines()[-1])
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        expected = count * len(clients.sockets)
        # Until all arrived, or nothing more for 2 s (a backlog must not
        # spill into the next scenario), at most DRAIN_SECONDS.
        deadline, last, quiet = time.monotonic() + DRAIN_SECONDS, -1, time.monotonic()
        # A lagging socket gets the latest step instead of a backlog
        # (generation.consumers): the last step reaching every socket ends it too.
        def done(run=run, expected=expected, count=count) -> bool:
            seen = clients.latencies.get(run, [])
            return len(seen) >= expected or sum(1 for step, _ in seen if step == count) >= len(clients.sockets)

        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if len(clients.latencies.get(run, [])) != last:
                last, quiet = len(clients.latencies.get(run, [])), time.monotonic()
            elif time.monotonic() - quiet > 2:
                break
        values = [1000 * v for _, v in clients.latencies.get(run, [])]
        by_step: dict[int, list[float]] = {}
        for step, v in clients.latencies.get(run, []):
            by_step.setdefault(step, []).append(1000 * v)
        out["scenarios"][name] = {
            "delivered": len(values),
            "expected": expected,
            "p50": pct(values, 50),
            "p99": pct(values, 99),
            "max": max(values) if values else float("nan"),
            "first_step_p50": pct(by_step.get(1, []), 50),
            "last_step_p50": pct(by_step.get(count, []), 50),
            "last_seen": len(by_step.get(count, [])),
            "sockets": len(clients.sockets),
            "sent_ms": publisher["sent_ms"],
        }
        await asyncio.sleep(0.5)
    await clients.close_all()
    return out


async def db_hop_cost(n: int = 1000) -> float:
    """What channels' AsyncConsumer.dispatch does before every handler
    (aclose_old_connections, a trip through the thread-sensitive executor),
    alone in this process: CPU microseconds per call."""
    from channels.db import aclose_old_connections

    await aclose_old_connections()
    started = time.process_time()
    for _ in range(n):
        await aclose_old_connections()
    return 1e6 * (time.process_time() - started) / n


def main() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    cookie = prepare()
    chosen_stacks = {s.strip() for s in os.environ.get("STACKS", "").split(",") if s.strip()}
    layers = [s.strip() for s in os.environ.get("LAYERS", "core,pubsub").split(",") if s.strip()]
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        uvloop_on = True
    except ImportError:
        uvloop_on = False
    print(
        f"websocket progress: {SOCKETS} sockets on one job, events from a separate publisher process "
        f"(generation.events.job_send); clients (one asyncio loop{', uvloop' if uvloop_on else ''}), "
        f"server, publisher, PostgreSQL and Redis share {os.cpu_count()} CPU cores; DEBUG off; "
        f"goal: p99 < {GOAL_P99_MS:.0f} ms",
        flush=True,
    )
    hop = asyncio.run(db_hop_cost())
    print(
        f"  channels' per-message aclose_old_connections() (before every handler, so per event per socket): "
        f"{hop:.0f} CPU-us per call here, i.e. {hop * SOCKETS / 1000:.0f} CPU-ms per event at {SOCKETS} sockets",
        flush=True,
    )
    port = free_port()
    summary = []
    for name, argv in stacks(port).items():
        if chosen_stacks and not any(name.startswith(c) for c in chosen_stacks):
            continue
        for layer in layers:
            env = {**os.environ, "BENCH_CHANNEL_LAYER": layer}
            job_id = new_job()
            slug = f"{name.replace(' ', '-').replace('/', '')}-{layer}"
            with open(LOGS / f"{slug}.log", "wb") as log:
                proc = subprocess.Popen(
                    argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            try:
                wait_ready(f"http://127.0.0.1:{port}/healthz", proc)
                result = asyncio.run(measure(port, job_id, cookie, layer))
            except Exception as exc:
                print(f"  {name} / {layer}: failed: {exc!r}", flush=True)
                continue
            finally:
                stop(proc)
            text = (LOGS / f"{slug}.log").read_text(errors="replace")
            # uvicorn's and granian's words for an application that raised
            crashes = text.count("Exception in ASGI application") + text.count("Application callable raised")
            pool = text.count("MaxConnectionsError")
            print(
                f"  {name} / {layer}: {result['connected']}/{SOCKETS} connected in {result['connect_s']:.1f} s "
                f"(each to its snapshot: p50 {result['connect_p50_ms']:.0f} ms, p99 {result['connect_p99_ms']:.0f} ms)"
                + (f"; errors e.g. {result['connect_errors']}" if result["connect_errors"] else "")
                + f"; server log: {crashes} consumers crashed, {pool} Redis pool exhausted (MaxConnectionsError)",
                flush=True,
            )
            worst = 0.0
            for scenario, s in result["scenarios"].items():
                worst = max(worst, s["p99"]) if s["last_seen"] == s["sockets"] else float("inf")
                print(
                    f"    {scenario:<11} delivered {s['delivered']:>6}/{s['expected']:<6} "
                    f"(the last step to {s['last_seen']}/{s['sockets']} sockets) latency ms: "
                    f"p50 {s['p50']:7.1f}  p99 {s['p99']:7.1f}  max {s['max']:7.1f}   "
                    f"(p50 of the first event {s['first_step_p50']:.1f}, of the last {s['last_step_p50']:.1f}; "
                    f"publisher sent all in {s['sent_ms']:.0f} ms)",
                    flush=True,
                )
            summary.append((name, layer, worst, result))
    print(
        "summary (goal: the last step reaches every socket, p99 < 100 ms in every scenario; "
        "a lagging socket skips the steps a newer one replaced):"
    )
    for name, layer, worst, _ in summary:
        print(f"  {name:<22} {layer:<7} worst p99 {worst:8.1f} ms   {'met' if worst < GOAL_P99_MS else 'not met'}")
    return 0


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # so that every started server and worker is stopped (finally)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        publish(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit(main())
