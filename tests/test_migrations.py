"""Moving the support chat out of the project shell loses no row: a database
in the old layout (tables of the `portal` app) migrates to the new one."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

OLD = [
    ("portal", "0001_initial"),
    ("contenttypes", "0002_remove_content_type_name"),
    ("auth", "0012_alter_user_first_name_max_length"),
]
NEW = [("support", "0002_rename_tables")]


@pytest.fixture
def old_layout(migrator):
    """The database as the previous release left it, with a chat in it."""
    state = migrator.apply_initial_migration(OLD)
    apps = state.apps
    user = apps.get_model("accounts", "User").objects.create(username="ann", email="ann@example.com")
    Conversation = apps.get_model("portal", "Conversation")
    Message = apps.get_model("portal", "Message")
    conversation = Conversation.objects.create(user=user, status="snoozed", person_read_id=1)
    visitor = Conversation.objects.create(visitor_hash="f" * 64)
    for n, sender in enumerate(["person", "staff", "person"]):
        Message.objects.create(conversation=conversation, sender=sender, body=f"message {n}", client_id=f"c{n}")
    Message.objects.create(conversation=visitor, sender="person", body="anyone there?")
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    old_type = ContentType.objects.create(app_label="portal", model="conversation")
    Permission.objects.create(content_type=old_type, codename="view_conversation", name="Can view conversation")
    # An earlier, partial migrate may already have made support's own row for
    # messages: the staff's grant on the old one must survive it.
    old_message_type = ContentType.objects.create(app_label="portal", model="message")
    grant = Permission.objects.create(content_type=old_message_type, codename="view_message", name="Can view message")
    apps.get_model("auth", "Group").objects.create(name="support staff").permissions.add(grant)
    ContentType.objects.create(app_label="support", model="message")
    return {"conversation": conversation.id, "visitor": visitor.id, "content_type": old_type.id}


def test_conversations_and_messages_move_to_the_support_app_without_losing_a_row(migrator, old_layout):
    apps = migrator.apply_tested_migration(NEW).apps
    Conversation = apps.get_model("support", "Conversation")
    Message = apps.get_model("support", "Message")

    conversation = Conversation.objects.get(id=old_layout["conversation"])
    assert (conversation.user.email, conversation.status, conversation.person_read_id) == (
        "ann@example.com",
        "snoozed",
        1,
    )
    assert [m.body for m in Message.objects.filter(conversation=conversation).order_by("id")] == [
        "message 0",
        "message 1",
        "message 2",
    ]
    assert Message.objects.get(conversation_id=old_layout["visitor"]).body == "anyone there?"

    tables = connection.introspection.table_names()
    assert {"support_conversation", "support_message"} <= set(tables)
    assert not {"portal_conversation", "portal_message"} & set(tables)

    # The constraints came along: a client id is still unique per conversation.
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, sender="person", body="again", client_id="c0")
    # New rows keep counting from the old ids.
    newest = Message.objects.create(conversation=conversation, sender="staff", body="after the move")
    assert newest.id > max(Message.objects.exclude(id=newest.id).values_list("id", flat=True))

    # Permissions (and admin history) follow the models' content type.
    ContentType = apps.get_model("contenttypes", "ContentType")
    moved = ContentType.objects.get(id=old_layout["content_type"])
    assert (moved.app_label, moved.model) == ("support", "conversation")
    Permission = apps.get_model("auth", "Permission")
    assert Permission.objects.get(codename="view_conversation").content_type_id == moved.id
    assert not ContentType.objects.filter(app_label="portal").exists()
    group = apps.get_model("auth", "Group").objects.get(name="support staff")
    assert [(p.content_type.app_label, p.codename) for p in group.permissions.all()] == [("support", "view_message")]
