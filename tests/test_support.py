"""The support chat and the staff inbox: persistence before broadcast,
catch-up by last id, who may join, and the inbox's refund."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from channels.testing import WebsocketCommunicator
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import LedgerEntry
from portal.asgi import application
from support.models import Conversation, Message
from support.services import conversation_open, message_post, remind_unread
from support.visitors import VISITOR_COOKIE
from tests.helpers import make_job, run_async

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://localhost")
XSS = "<img src=x onerror=alert(1)>"


def cookie_of(user) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def connect(path: str, *headers):
    communicator = WebsocketCommunicator(application, path, headers=list(headers))
    connected, code = await communicator.connect(timeout=10)
    return communicator, connected, code


def test_person_sends_staff_receives_persisted_first_and_the_sender_gets_an_ack(alice, charlie):
    person_cookie, staff_cookie = cookie_of(alice), cookie_of(charlie)
    conversation = conversation_open(user=alice, visitor_token=None)

    async def scenario():
        staff, ok, _ = await connect(f"/ws/support/{conversation.id}/", ORIGIN, staff_cookie)
        assert ok
        person, ok, _ = await connect("/ws/support/", ORIGIN, person_cookie)
        assert ok
        await person.send_json_to({"type": "send", "client_id": "c-1", "body": "my job failed"})
        ack = await person.receive_json_from(timeout=10)
        heard = await staff.receive_json_from(timeout=10)
        stored = await asyncio.to_thread(lambda: Message.objects.filter(id=heard["message"]["id"]).exists())
        await person.disconnect()
        await staff.disconnect()
        return ack, heard, stored

    ack, heard, stored = run_async(scenario())
    assert ack["type"] == "ack" and ack["client_id"] == "c-1" and isinstance(ack["id"], int)
    assert heard["message"] == {**heard["message"], "id": ack["id"], "body": "my job failed", "sender": "person"}
    assert stored, "the broadcast carried an id with no row behind it"


def test_a_third_user_cannot_join_or_read_the_conversation(alice, bob):
    conversation = conversation_open(user=alice, visitor_token=None)
    message_post(conversation=conversation, sender="person", body="private to alice")
    bob_cookie = cookie_of(bob)

    async def scenario():
        _, ok, code = await connect(f"/ws/support/{conversation.id}/", ORIGIN, bob_cookie)
        own, ok_own, _ = await connect("/ws/support/", ORIGIN, bob_cookie)
        await own.send_json_to({"type": "hello", "last_id": 0})
        history = await own.receive_json_from(timeout=10)
        await own.disconnect()
        return ok, code, ok_own, history

    ok, code, ok_own, history = run_async(scenario())
    assert (ok, code) == (False, 4403)
    assert ok_own and history == {"type": "messages", "messages": []}


def test_a_foreign_origin_is_refused(alice):
    cookie = cookie_of(alice)

    async def scenario():
        _, ok, _ = await connect("/ws/support/", (b"origin", b"https://evil.example"), cookie)
        return ok

    assert run_async(scenario()) is False


def test_reconnect_with_the_last_id_gets_exactly_what_was_missed_in_order(alice, charlie):
    cookie = cookie_of(alice)
    conversation = conversation_open(user=alice, visitor_token=None)
    first, _ = message_post(conversation=conversation, sender="person", body="hello?")
    message_post(conversation=conversation, sender="staff", body="one", author=charlie)
    message_post(conversation=conversation, sender="staff", body="two", author=charlie)

    async def scenario():
        person, ok, _ = await connect("/ws/support/", ORIGIN, cookie)
        assert ok
        await person.send_json_to({"type": "hello", "last_id": first.id})
        missed = await person.receive_json_from(timeout=10)
        await person.disconnect()
        return missed

    missed = run_async(scenario())
    assert [m["body"] for m in missed["messages"]] == ["one", "two"]


def test_a_nul_over_the_websocket_gets_an_error_message_not_a_crash(alice):
    cookie = cookie_of(alice)

    async def scenario():
        ws, connected, _ = await connect("/ws/support/", ORIGIN, cookie)
        assert connected
        await ws.send_json_to({"type": "send", "body": "hi\x00there", "client_id": "n1"})
        error = await ws.receive_json_from(timeout=10)
        await ws.send_json_to(["not", "an", "object"])
        second = await ws.receive_json_from(timeout=10)
        await ws.send_json_to({"type": "hello", "last_id": "\x00"})
        caught_up = await ws.receive_json_from(timeout=10)
        await ws.disconnect()
        return error, second, caught_up

    error, second, caught_up = run_async(scenario())
    assert error["type"] == "error" and error["code"] == "invalid_text" and error["client_id"] == "n1"
    assert second["type"] == "error"
    assert caught_up == {"type": "messages", "messages": []}
    assert not Message.objects.exists()


def send_once_from(cookie, peer: str, forwarded: str) -> dict:
    """Connect as `cookie` from `peer` (claiming `forwarded`), send one message, return the answer."""

    async def scenario():
        headers = [ORIGIN, cookie, (b"x-forwarded-for", forwarded.encode())]
        ws = WebsocketCommunicator(application, "/ws/support/", headers=headers)
        ws.scope["client"] = (peer, 40000)
        connected, _ = await ws.connect(timeout=10)
        assert connected
        await ws.send_json_to({"type": "send", "body": "hello", "client_id": forwarded})
        answer = await ws.receive_json_from(timeout=10)
        await ws.disconnect()
        return answer

    return run_async(scenario())


def test_the_websocket_limits_each_client_behind_a_trusted_proxy_by_its_own_address(alice, bob, settings):
    settings.TRUSTED_PROXIES = ("10.0.0.7",)
    settings.CHAT_IP_RATE_LIMIT = "1/m"
    assert send_once_from(cookie_of(alice), "10.0.0.7", "198.51.100.1")["type"] == "ack"
    assert send_once_from(cookie_of(bob), "10.0.0.7", "198.51.100.2")["type"] == "ack"
    # A peer that is not our proxy cannot pick its address with the header.
    assert send_once_from(cookie_of(alice), "203.0.113.9", "198.51.100.3")["type"] == "ack"
    assert send_once_from(cookie_of(bob), "203.0.113.9", "198.51.100.4")["code"] == "rate_limited"


def test_the_same_client_id_twice_makes_one_row(alice):
    cookie = cookie_of(alice)

    async def scenario():
        person, ok, _ = await connect("/ws/support/", ORIGIN, cookie)
        assert ok
        acks = []
        for _ in range(2):
            await person.send_json_to({"type": "send", "client_id": "same", "body": "resent"})
            while True:
                reply = await person.receive_json_from(timeout=10)
                if reply["type"] == "ack":
                    acks.append(reply)
                    break
        await person.disconnect()
        return acks

    acks = run_async(scenario())
    assert acks[0]["id"] == acks[1]["id"]
    assert Message.objects.filter(client_id="same").count() == 1


def test_a_dropped_broadcast_is_recovered_by_the_catch_up(alice, charlie, monkeypatch):
    import support.services

    cookie = cookie_of(alice)
    conversation = conversation_open(user=alice, visitor_token=None)
    monkeypatch.setattr(support.services, "_ring", lambda *args: None)  # the channel layer drops it
    message_post(conversation=conversation, sender="staff", body="did you get this?", author=charlie)

    async def scenario():
        person, ok, _ = await connect("/ws/support/", ORIGIN, cookie)
        assert ok
        await person.send_json_to({"type": "hello", "last_id": 0})
        history = await person.receive_json_from(timeout=10)
        await person.disconnect()
        return history

    assert [m["body"] for m in run_async(scenario())["messages"]] == ["did you get this?"]


def test_markup_round_trips_as_literal_text(alice, charlie):
    cookie = cookie_of(alice)

    async def scenario():
        person, ok, _ = await connect("/ws/support/", ORIGIN, cookie)
        assert ok
        await person.send_json_to({"type": "send", "client_id": "x", "body": XSS})
        await person.receive_json_from(timeout=10)
        await person.send_json_to({"type": "hello", "last_id": 0})
        while True:
            reply = await person.receive_json_from(timeout=10)
            if reply["type"] == "messages":
                break
        await person.disconnect()
        return reply

    assert run_async(scenario())["messages"][0]["body"] == XSS
    staff = Client()
    staff.force_login(charlie)
    html = staff.get(reverse("support_conversation", args=[Conversation.objects.get(user=alice).id])).content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and XSS not in html


def test_a_visitor_chats_anonymously_and_the_thread_moves_to_the_account_on_sign_in(alice):
    visitor = Client()
    response = visitor.post(reverse("support_messages"), {"body": "can I try for free?", "client_id": "v1"})
    assert response.status_code == 200 and VISITOR_COOKIE in response.cookies
    conversation = Conversation.objects.get(user__isnull=True)
    assert conversation.visitor_hash and conversation.visitor_hash not in response.cookies[VISITOR_COOKIE].value
    visitor.post(reverse("account_login"), {"login": alice.email, "password": "correct horse 42"})
    conversation.refresh_from_db()
    assert conversation.user == alice
    assert [m["body"] for m in visitor.get(reverse("support_messages")).json()["messages"]] == ["can I try for free?"]


def sign_in(client: Client, user):
    return client.post(reverse("account_login"), {"login": user.email, "password": "correct horse 42"})


def cookie_dropped(response) -> bool:
    cookie = response.cookies.get(VISITOR_COOKIE)
    return cookie is not None and cookie.value == "" and cookie["max-age"] == 0


def test_a_visitor_cookie_from_another_browser_session_is_not_merged_at_sign_in(alice):
    visitor = Client()
    visitor.post(reverse("support_messages"), {"body": "my card number is ...", "client_id": "v1"})
    token = visitor.cookies[VISITOR_COOKIE].value
    # The next person on this browser: the cookie stayed, the session did not.
    next_person = Client()
    next_person.cookies[VISITOR_COOKIE] = token
    response = sign_in(next_person, alice)
    assert Conversation.objects.get().user is None  # still the visitor's, not alice's
    assert cookie_dropped(response)
    assert next_person.get(reverse("support_messages")).json()["messages"] == []


def test_an_old_visitor_thread_on_a_shared_browser_is_not_merged_at_sign_in(alice):
    from datetime import timedelta

    from django.utils import timezone

    visitor = Client()
    visitor.post(reverse("support_messages"), {"body": "my card number is ...", "client_id": "v1"})
    Message.objects.update(created_at=timezone.now() - timedelta(hours=2))
    # Hours later the next person signs in on the same browser, same session.
    sign_in(visitor, alice)
    assert Conversation.objects.get().user is None


def test_the_visitor_cookie_is_dropped_at_sign_in_and_at_sign_out(alice):
    visitor = Client()
    visitor.post(reverse("support_messages"), {"body": "hello", "client_id": "v1"})
    token = visitor.cookies[VISITOR_COOKIE].value
    assert cookie_dropped(sign_in(visitor, alice))
    assert Conversation.objects.get().user == alice
    visitor.cookies[VISITOR_COOKIE] = token  # e.g. a cookie the sign-in response did not reach
    assert cookie_dropped(visitor.post(reverse("account_logout")))


def test_new_conversations_without_a_cookie_are_capped_per_client_address(settings):
    settings.CHAT_NEW_CONVERSATION_RATE_LIMIT = "2/h"
    visitors = [Client() for _ in range(3)]
    codes = [v.post(reverse("support_messages"), {"body": "hi", "client_id": "a"}).status_code for v in visitors]
    assert codes == [200, 200, 429]
    assert Conversation.objects.count() == 2
    # A visitor who has a conversation goes on writing in it.
    assert visitors[0].post(reverse("support_messages"), {"body": "more", "client_id": "b"}).status_code == 200


def test_a_refused_first_message_starts_no_conversation():
    response = Client().post(reverse("support_messages"), {"body": "   ", "client_id": "a"})
    assert response.status_code == 400
    assert not Conversation.objects.exists()


def test_unread_badge_is_rendered_by_the_server(client, alice, charlie):
    conversation = conversation_open(user=alice, visitor_token=None)
    message_post(conversation=conversation, sender="staff", body="we fixed it", author=charlie)
    client.force_login(alice)
    assert 'aria-label="1 unread"' in client.get(reverse("home")).content.decode()
    client.get(reverse("support_messages"), {"after": 0})  # reading marks it read
    assert 'aria-label="1 unread"' not in client.get(reverse("home")).content.decode()


def test_a_snoozed_conversation_reopens_when_the_person_writes(alice):
    conversation = conversation_open(user=alice, visitor_token=None)
    Conversation.objects.filter(id=conversation.id).update(status="snoozed")
    message_post(conversation=conversation, sender="person", body="still there?")
    assert Conversation.objects.get(id=conversation.id).status == "open"


def test_sending_too_fast_gets_a_visible_message(client, alice, settings):
    settings.CHAT_RATE_LIMIT = "2/m"
    client.force_login(alice)
    codes = [client.post(reverse("support_messages"), {"body": f"m{i}", "client_id": f"r{i}"}) for i in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert "too fast" in codes[-1].json()["error"]["message"]


def test_staff_refund_from_the_inbox_makes_one_ledger_row_even_if_clicked_twice(alice, charlie):
    from catalog.seeds import catalog_register_test_checkpoints
    from workers.testweights import RANDOM_CHECKPOINTS

    catalog_register_test_checkpoints(RANDOM_CHECKPOINTS)
    job = make_job(alice, "test-sd1", status="succeeded", credits_charged=3)
    conversation = conversation_open(user=alice, visitor_token=None)
    message_post(conversation=conversation, sender="person", body="the picture was broken")
    staff = Client()
    staff.force_login(charlie)
    url = reverse("support_conversation", args=[conversation.id])
    page = staff.get(url).content.decode()
    assert "Refund job (3)" in page and "the picture was broken" in page
    for _ in range(2):
        staff.post(url, {"action": "refund", "job": str(job.id)})
    refunds = LedgerEntry.objects.filter(account__user=alice, kind="refund")
    assert [(r.amount, r.actor) for r in refunds] == [(3, charlie)]
    assert Message.objects.filter(conversation=conversation, sender="system").count() == 1
    from django.contrib.admin.models import LogEntry

    assert LogEntry.objects.filter(user=charlie, object_id=str(refunds[0].pk)).count() == 1


def test_a_support_refund_needs_the_billing_permission_not_just_staff(alice):
    from django.contrib.auth.models import Permission

    from catalog.seeds import catalog_register_test_checkpoints
    from tests.conftest import make_user
    from workers.testweights import RANDOM_CHECKPOINTS

    catalog_register_test_checkpoints(RANDOM_CHECKPOINTS)
    job = make_job(alice, "test-sd1", status="succeeded", credits_charged=3)
    conversation = conversation_open(user=alice, visitor_token=None)
    agent = make_user("agent@example.com", staff=True)
    agent.user_permissions.add(Permission.objects.get(codename="view_others_jobs"))
    staff = Client()
    staff.force_login(agent)
    url = reverse("support_conversation", args=[conversation.id])
    staff.post(url, {"action": "refund", "job": str(job.id)})
    assert not LedgerEntry.objects.filter(account__user=alice, kind="refund").exists()

    agent.user_permissions.add(Permission.objects.get(codename="adjust_credits"))
    staff = Client()
    staff.force_login(agent)
    staff.post(url, {"action": "refund", "job": str(job.id)})
    assert LedgerEntry.objects.filter(account__user=alice, kind="refund").count() == 1


def test_inbox_lists_conversations_with_unread_counts_and_statuses(alice, bob, charlie):
    for user in (alice, bob):
        message_post(
            conversation=conversation_open(user=user, visitor_token=None),
            sender="person",
            body=f"hi from {user.email}",
        )
    staff = Client()
    staff.force_login(charlie)
    html = staff.get(reverse("support_inbox")).content.decode()
    assert alice.email in html and bob.email in html and "<strong>1</strong>" in html
    conversation = Conversation.objects.get(user=bob)
    staff.post(reverse("support_conversation", args=[conversation.id]), {"action": "status", "status": "resolved"})
    staff.post(reverse("support_conversation", args=[conversation.id]), {"action": "assign"})
    conversation.refresh_from_db()
    assert (conversation.status, conversation.assigned_to) == ("resolved", charlie)
    assert bob.email not in staff.get(reverse("support_inbox")).content.decode()  # open ones by default
    people = Client()
    people.force_login(alice)
    assert people.get(reverse("support_inbox")).status_code == 302


def test_an_unread_staff_reply_is_emailed_once_after_a_while(alice, charlie):
    conversation = conversation_open(user=alice, visitor_token=None)
    reply, _ = message_post(conversation=conversation, sender="staff", body="here is your answer", author=charlie)
    assert remind_unread() == 0  # too early
    Message.objects.filter(id=reply.id).update(created_at=timezone.now() - timedelta(hours=1))
    assert remind_unread() == 1 and remind_unread() == 0
    assert mail.outbox[-1].to == [alice.email] and "here is your answer" in mail.outbox[-1].body


def test_ask_about_this_job_attaches_the_job(client, alice, bob):
    from catalog.seeds import catalog_register_test_checkpoints
    from workers.testweights import RANDOM_CHECKPOINTS

    catalog_register_test_checkpoints(RANDOM_CHECKPOINTS)
    mine, theirs = make_job(alice, "test-sd1", status="failed"), make_job(bob, "test-sd1", status="failed")
    client.force_login(alice)
    job_page = client.get(reverse("job", args=[mine.id])).content.decode()
    assert f'data-ask-about-job="{mine.id}"' in job_page
    client.post(reverse("support_messages"), {"body": "why?", "client_id": "j1", "job": str(theirs.id)})
    assert Conversation.objects.get(user=alice).job is None  # not someone else's job
    client.post(reverse("support_messages"), {"body": "why?", "client_id": "j2", "job": str(mine.id)})
    assert Conversation.objects.get(user=alice).job == mine
