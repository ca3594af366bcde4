"""The support chat's websocket. A person (signed in, or a visitor with the
signed cookie) talks on /ws/support/; staff on /ws/support/<conversation>/.
On connect and on {"type": "hello", "last_id": N} the server sends every
message after N, in order; {"type": "send", "client_id", "body"} stores a
message and answers {"type": "ack", "client_id", "id"}."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from support.models import Conversation, Message
from support.selectors import messages_after
from support.services import ChatError, conversation_group, conversation_open, mark_read, message_out, message_post
from support.visitors import VISITOR_COOKIE

CLOSE_FORBIDDEN = 4403


class SupportConsumer(AsyncJsonWebsocketConsumer):
    conversation: Conversation | None = None
    side = "person"

    async def connect(self) -> None:
        self.conversation = await self._conversation()
        if self.conversation is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(conversation_group(self.conversation.id), self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.conversation is not None:
            await self.channel_layer.group_discard(conversation_group(self.conversation.id), self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "code": "bad_message", "message": "Send a JSON object."})
            return
        kind = content.get("type")
        if kind == "hello":
            missed = await self._after(_number(content.get("last_id")))
            await self.send_json({"type": "messages", "messages": missed})
        elif kind == "send":
            try:
                reply = await self._send(str(content.get("body", "")), str(content.get("client_id", "")))
            except ChatError as error:
                await self.send_json(
                    {
                        "type": "error",
                        "code": error.code,
                        "message": error.message,
                        "client_id": content.get("client_id"),
                    }
                )
            else:
                await self.send_json(reply)
        elif kind == "read":
            await database_sync_to_async(mark_read)(
                conversation=self.conversation, side=self.side, up_to=_number(content.get("up_to"))
            )

    async def support_event(self, event: dict) -> None:
        await self.send_json(event["message"])

    @database_sync_to_async
    def _conversation(self) -> Conversation | None:
        user = self.scope.get("user")
        cookies = self.scope.get("cookies", {})
        return conversation_open(user=user, visitor_token=cookies.get(VISITOR_COOKIE))

    @database_sync_to_async
    def _after(self, last_id: int) -> list[dict]:
        return [message_out(m) for m in messages_after(conversation=self.conversation, after_id=last_id)]

    @database_sync_to_async
    def _send(self, body: str, client_id: str) -> dict:
        user = self.scope.get("user")
        author = user if user is not None and user.is_authenticated else None
        sender = Message.Sender.STAFF if self.side == "staff" else Message.Sender.PERSON
        client = self.scope.get("client") or ("", 0)
        message, _ = message_post(
            conversation=self.conversation,
            sender=sender,
            body=body,
            client_id=client_id,
            author=author,
            ip=client[0] or "",
        )
        return {"type": "ack", "client_id": client_id or None, "id": message.id}


def _number(value) -> int:
    """A message id from the client; anything else counts as 0."""
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


class StaffSupportConsumer(SupportConsumer):
    side = "staff"

    @database_sync_to_async
    def _conversation(self) -> Conversation | None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            return None
        return Conversation.objects.filter(id=self.scope["url_route"]["kwargs"]["conversation_id"]).first()
