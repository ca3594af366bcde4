"""ASGI wrappers around the apps in portal.asgi, for what must happen before
Django or Channels see a request.

A body over the limit is refused here from its Content-Length, before
anything reads it. Django's WSGI handler (portal.asgi) reads a body only by
its Content-Length, so a chunked body (none given) would reach a view as an
empty one: it is refused with 411, and should bytes come anyway, the
stream is cut at the limit.
"""

from __future__ import annotations

from portal.clientip import scope_with_client_ip
from portal.middleware import body_limit, length_required, too_large


class BodySizeLimit:
    """413 for an HTTP request whose body is over body_limit(): from its
    Content-Length alone, without reading it; or, without one, as soon as
    the bytes received pass the limit, and Django is then handed an
    http.disconnect so it drops the request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit()
        length = _content_length(scope)
        if length is not None and length > limit:
            return await _refuse(scope, send)
        if length is None and _chunked(scope):
            return await _answer(scope, send, length_required(scope.get("path", "")))
        received = 0
        refused = False

        async def limited_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message) -> None:
            if not refused:  # we answered already; the app's answer (if any) is dropped
                await send(message)

        return await self.app(scope, limited_receive, guarded_send)


def client_ip_resolved(app):
    """scope["client"] is the client behind TRUSTED_PROXIES (the websocket
    consumers' per-address limits read it), as REMOTE_ADDR is for HTTP."""

    async def asgi(scope, receive, send):
        return await app(scope_with_client_ip(scope), receive, send)

    return asgi


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


def _chunked(scope) -> bool:
    return any(name.lower() == b"transfer-encoding" and b"chunked" in value.lower() for name, value in scope["headers"])


async def _refuse(scope, send) -> None:
    await _answer(scope, send, too_large(scope.get("path", "")))


async def _answer(scope, send, response) -> None:
    headers = [(b"content-type", response["Content-Type"].encode()), (b"connection", b"close")]
    headers.append((b"content-length", str(len(response.content)).encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
