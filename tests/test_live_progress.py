"""Live job progress over the websocket (Channels, the real Redis channel
layer, a real worker): who may listen, and what they hear."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from billing.ledger import credits_grant
from catalog.seeds import catalog_register_test_checkpoints
from portal.asgi import application
from tests.helpers import api_client, make_job, png_bytes, run_async

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://localhost")


def session_cookie(user) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def open_socket(job_id, *headers):
    communicator = WebsocketCommunicator(application, f"/ws/jobs/{job_id}/", headers=list(headers))
    connected, code = await communicator.connect(timeout=10)
    return communicator, connected, code


@pytest.fixture
def catalog(test_checkpoints):
    catalog_register_test_checkpoints(test_checkpoints.values())


def test_an_anonymous_socket_cannot_open_a_job(catalog, alice):
    job = make_job(alice, "test-sd1")

    async def scenario():
        communicator, connected, code = await open_socket(job.id, ORIGIN)
        await communicator.disconnect()
        return connected, code

    assert run_async(scenario()) == (False, 4401)


def test_another_persons_socket_is_refused(catalog, alice, bob):
    job = make_job(alice, "test-sd1")
    cookie = session_cookie(bob)

    async def scenario():
        communicator, connected, code = await open_socket(job.id, ORIGIN, cookie)
        await communicator.disconnect()
        return connected, code

    assert run_async(scenario()) == (False, 4404)


def test_a_foreign_origin_is_refused(catalog, alice):
    job = make_job(alice, "test-sd1")
    cookie = session_cookie(alice)

    async def scenario():
        communicator, connected, _ = await open_socket(job.id, (b"origin", b"https://evil.example"), cookie)
        await communicator.disconnect()
        return connected

    assert run_async(scenario()) is False


def test_a_real_worker_job_pushes_increasing_steps_then_the_results(catalog, alice, gpu_worker):
    credits_grant(user=alice, amount=20, ref="g")
    response = api_client(alice).post(
        "/api/v1/img2img",
        {
            "model": "test-sd1",
            "prompt": "a fox",
            "steps": 40,
            "strength": 0.5,
            "width": 512,
            "height": 512,
            "image": SimpleUploadedFile("in.png", png_bytes()),
        },
    )
    job_id = response.json()["id"]
    cookie = session_cookie(alice)

    async def scenario():
        communicator, connected, _ = await open_socket(job_id, ORIGIN, cookie)
        assert connected
        messages = []
        while True:
            message = await communicator.receive_json_from(timeout=120)
            messages.append(message)
            if message["type"] == "job" and message["job"]["status"] in ("succeeded", "failed", "canceled"):
                break
        await communicator.disconnect()

        # A late subscriber (a reconnect) starts from the current state.
        again, connected, _ = await open_socket(job_id, ORIGIN, cookie)
        snapshot = await again.receive_json_from(timeout=10)
        await again.disconnect()
        return messages, snapshot

    messages, snapshot = run_async(scenario())
    assert messages[0]["type"] == "job"  # the state on connect
    steps = [m["step"] for m in messages if m["type"] == "progress"]
    assert steps and steps == sorted(steps) and steps[-1] == 20, steps
    assert all(m["total"] == 20 for m in messages if m["type"] == "progress")
    previews = [m for m in messages if m["type"] == "preview"]
    assert previews and previews[0]["image"].startswith("data:image/jpeg;base64,")
    final = messages[-1]["job"]
    assert final["status"] == "succeeded" and len(final["images"]) == 1
    assert snapshot == {"type": "job", "job": final}


def test_a_lagging_socket_gets_the_latest_step_and_every_state_in_order():
    """While a socket's send is held up, newer steps (and previews) replace
    the ones not sent yet; the job's state messages are never dropped nor
    overtaken. Each event was encoded once, by its sender: the socket sends
    that text."""
    import asyncio
    import json

    from generation.consumers import JobConsumer

    async def scenario() -> list[dict]:
        consumer = JobConsumer()
        sent, gate = [], asyncio.Event()

        async def send(text_data=None, **kwargs):
            sent.append(json.loads(text_data))
            if len(sent) == 1:
                await gate.wait()  # the first send lags

        consumer.send = send

        def deliver(message: dict) -> None:
            consumer.deliver(message["type"], json.dumps(message))

        deliver({"type": "progress", "step": 1})
        await asyncio.sleep(0)  # the sender task takes step 1 and waits
        for step in range(2, 6):
            deliver({"type": "progress", "step": step})
        deliver({"type": "preview", "image": "a"})
        deliver({"type": "preview", "image": "b"})
        deliver({"type": "job", "job": {"status": "running"}})
        deliver({"type": "progress", "step": 6})
        deliver({"type": "progress", "step": 7})
        deliver({"type": "job", "job": {"status": "succeeded"}})
        gate.set()
        await consumer.sending
        return sent

    assert asyncio.run(scenario()) == [
        {"type": "progress", "step": 1},
        {"type": "progress", "step": 5},
        {"type": "preview", "image": "b"},
        {"type": "job", "job": {"status": "running"}},
        {"type": "progress", "step": 7},
        {"type": "job", "job": {"status": "succeeded"}},
    ]


def test_each_process_subscribes_once_per_job_and_hands_each_socket_its_job_s_events():
    """generation.fanout: sockets of two jobs, one joining while the reader
    already runs; an event of one job reaches its sockets only, in order;
    the last socket of a job to leave ends its subscription."""
    import asyncio
    import json
    import uuid

    from generation.events import events_flush, job_send
    from generation.fanout import job_channel, job_fanout

    class Socket:
        def __init__(self) -> None:
            self.got: list[tuple[str, dict]] = []

        def deliver(self, kind: str, text: str) -> None:
            self.got.append((kind, json.loads(text)))

    async def until(predicate) -> None:
        for _ in range(200):
            if predicate():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("timed out")

    async def scenario():
        fanout = job_fanout()
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        a, b, c = Socket(), Socket(), Socket()
        await fanout.join(first, a)
        await fanout.join(first, b)
        job_send(first, {"type": "progress", "step": 1})
        await until(lambda: a.got and b.got)
        await fanout.join(second, c)  # while the reader runs
        job_send(second, {"type": "progress", "step": 9})
        job_send(first, {"type": "job", "job": {"status": "succeeded"}})
        await asyncio.to_thread(events_flush, 5)
        await until(lambda: len(a.got) == 2 and c.got)
        channels = await fanout.client.pubsub_channels(job_channel("*"))
        await fanout.leave(first, a)
        await fanout.leave(first, b)
        await fanout.leave(second, c)
        await until(lambda: fanout.reader.done())
        left = await fanout.client.pubsub_channels(job_channel("*"))
        subscribed = {channel.decode() for channel in channels}
        return a.got, b.got, c.got, subscribed, {channel.decode() for channel in left}, (first, second)

    got_a, got_b, got_c, subscribed, left, jobs = asyncio.run(scenario())
    done = {"type": "job", "job": {"status": "succeeded"}}
    assert got_a == got_b == [("progress", {"type": "progress", "step": 1}), ("job", done)]
    assert got_c == [("progress", {"type": "progress", "step": 9})]
    assert {job_channel(job) for job in jobs} <= subscribed
    assert not {job_channel(job) for job in jobs} & left


def test_a_socket_whose_connect_fails_leaves_its_job_s_channel():
    """Channels calls no disconnect for a connect that raised (the client
    left mid-connect): the socket must not stay subscribed."""
    import asyncio
    import uuid

    from generation.consumers import JobConsumer
    from generation.fanout import job_channel, job_fanout

    class Person:
        is_authenticated = True

    async def scenario():
        job_id = str(uuid.uuid4())
        consumer = JobConsumer()
        consumer.scope = {"user": Person(), "url_route": {"kwargs": {"job_id": job_id}}}

        async def visible(user, job):
            return True

        async def accept(*args, **kwargs):
            raise ConnectionResetError("the client left")

        consumer._visible, consumer.accept = visible, accept
        with pytest.raises(ConnectionResetError):
            await consumer.connect()
        return job_channel(job_id) in job_fanout().sockets, consumer.sending.done()

    assert asyncio.run(scenario()) == (False, True)
