"""The support widget in a real browser: a visitor writes, staff answer from
the inbox, and the answer reaches the visitor; markup stays text. The test
server speaks no websocket, so this also exercises the polling fallback
(the websocket path is tested with Channels' communicator in test_support)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from support.models import Conversation, Message
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_visitor_asks_and_the_staff_answer_arrives(browser, live_server):
    make_user("staffer@example.com", staff=True, superuser=True, password="a-long-pass-phrase-9")
    visitor = browser.new_page()
    errors: list[str] = []
    visitor.on("pageerror", lambda error: errors.append(str(error)))
    visitor.goto(live_server.url + reverse("home"))
    visitor.click("#chat-toggle")
    visitor.fill("#chat-body", "<img src=x onerror=alert(1)> is it free?")
    visitor.click("#chat-form button[type=submit]")
    visitor.wait_for_selector("#chat-log li.chat-person")
    assert visitor.inner_text("#chat-log li.chat-person") == "<img src=x onerror=alert(1)> is it free?"
    assert visitor.query_selector("#chat-log img") is None

    staff = browser.new_page()
    staff.goto(live_server.url + reverse("account_login"))
    staff.fill("input[name=login]", "staffer@example.com")
    staff.fill("input[name=password]", "a-long-pass-phrase-9")
    staff.click("main button[type=submit]")
    staff.wait_for_url("**/account/")
    staff.goto(live_server.url + reverse("support_conversation", args=[Conversation.objects.get().id]))
    staff.fill("#reply", "Yes, 10 credits to start.")
    staff.click("form button:has-text('Send')")

    visitor.wait_for_selector("#chat-log li.chat-staff", timeout=20_000)
    assert visitor.inner_text("#chat-log li.chat-staff") == "Yes, 10 credits to start."
    assert Message.objects.count() == 2 and errors == []
    visitor.close()
    staff.close()
