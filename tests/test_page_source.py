"""No page shows template source: every page, in every mode of the create
page, for visitors, people and staff, has no `{#`, `{%` or `{{` in what a
person sees (its text and the attributes a browser shows). A multi-line
`{# ... #}` comment, which Django renders as text, fails here."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from catalog.modes import OFFERED
from catalog.seeds import catalog_register_test_checkpoints, catalog_register_test_controlnets
from generation.models import JobImage
from support.models import Message
from support.services import conversation_open, message_post
from tests.helpers import make_job, png_bytes
from workers.heartbeat import publish, remove
from workers.testweights import RANDOM_CONTROLNETS

pytestmark = pytest.mark.django_db
SOURCE = ("{#", "#}", "{%", "%}", "{{", "}}")
SHOWN_ATTRIBUTES = {"alt", "title", "placeholder", "aria-label"}
HIDDEN_ELEMENTS = {"script", "style", "template"}


class ShownText(HTMLParser):
    """The text a browser shows: text nodes outside scripts and styles, and
    the attributes it shows (alt, title, placeholder, labels)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in HIDDEN_ELEMENTS:
            self.hidden += 1
        self.parts.extend(value for name, value in attrs if name in SHOWN_ATTRIBUTES and value)

    def handle_endtag(self, tag):
        if tag in HIDDEN_ELEMENTS and self.hidden:
            self.hidden -= 1

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def template_source_in(html: str) -> list[str]:
    parser = ShownText()
    parser.feed(html)
    return [part.strip()[:120] for part in parser.parts if any(mark in part for mark in SOURCE)]


@pytest.fixture
def site(alice, charlie, test_checkpoints):
    """The test models served, a finished job of alice's with a result, and
    a support conversation with a message."""
    catalog_register_test_checkpoints(test_checkpoints.values())
    controls = [control.slug for control in catalog_register_test_controlnets(RANDOM_CONTROLNETS)]
    publish(worker_id="page-source", serves=list(test_checkpoints), loaded=[], device="cpu", controls=controls)
    job = make_job(alice, "test-sd1", status="succeeded", credits_charged=1)
    JobImage(job=job, index=0, width=64, height=64).file.save("0.png", ContentFile(png_bytes(size=(64, 64))))
    conversation = conversation_open(user=alice, visitor_token=None)
    message_post(conversation=conversation, sender=Message.Sender.PERSON, body="Where is my picture?")
    yield {"job": job, "conversation": conversation}
    remove("page-source")


def pages_of(site) -> dict[str, list[str]]:
    job = site["job"]
    create = reverse("create")
    return {
        "visitor": [
            reverse("home"),
            reverse("pricing"),
            reverse("status"),
            reverse("models"),
            reverse("account_login"),
            reverse("account_signup"),
        ],
        "person": [
            reverse("home"),
            *(f"{create}?mode={mode}" for mode in OFFERED),
            *(f"{create}?parent={job.id}&mode={mode}" for mode in OFFERED),
            reverse("history"),
            reverse("job", args=[job.id]),
            reverse("account"),
            reverse("purchases"),
        ],
        "staff": [
            reverse("admin:index"),
            reverse("support_inbox"),
            reverse("support_conversation", args=[site["conversation"].id]),
            reverse("admin:catalog_checkpoint_changelist"),
            reverse("admin:catalog_checkpoint_change", args=[job.checkpoint_id]),
            reverse("admin:generation_webhookdelivery_changelist"),
            reverse("job", args=[job.id]),
        ],
    }


def test_no_page_shows_template_source(client, site, alice, charlie):
    users = {"visitor": None, "person": alice, "staff": charlie}
    shown: dict[str, list[str]] = {}
    for who, paths in pages_of(site).items():
        client.logout()
        if users[who] is not None:
            client.force_login(users[who])
        for path in paths:
            response = client.get(path)
            assert response.status_code == 200, (who, path, response.status_code)
            if found := template_source_in(response.content.decode()):
                shown[f"{who} {path}"] = found
    assert not shown, shown


def test_the_check_finds_a_multi_line_comment():
    html = "<main>{# one\n two #}<p>Hello</p><script>if (a && {b: 1}) {}</script></main>"
    assert template_source_in(html) == ["{# one\n two #}"]
