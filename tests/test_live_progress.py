"""Live job progress over the websocket (Channels, the real Redis channel
layer, a real worker): who may listen, and what they hear."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from billing.ledger import credits_grant
from generation.catalog import catalog_register_test_checkpoints
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
