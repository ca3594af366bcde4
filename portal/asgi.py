"""ASGI entry point: HTTP through Django, websockets through Channels
(origin checked against ALLOWED_HOSTS, session auth)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django_http = get_asgi_application()  # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from portal.clientip import scope_with_client_ip  # noqa: E402
from portal.routing import websocket_urlpatterns  # noqa: E402


def client_ip_resolved(app):
    """scope["client"] is the client behind TRUSTED_PROXIES (the websocket
    consumers' per-address limits read it), as REMOTE_ADDR is for HTTP."""

    async def asgi(scope, receive, send):
        return await app(scope_with_client_ip(scope), receive, send)

    return asgi


application = ProtocolTypeRouter(
    {
        "http": django_http,
        "websocket": client_ip_resolved(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
