"""ASGI entry point: HTTP through Django (bodies over the upload limit
refused before Django spools them), websockets through Channels (origin
checked against ALLOWED_HOSTS, session auth); both see the client's address
behind TRUSTED_PROXIES (portal.asgi_guards)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django_http = get_asgi_application()  # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from portal.asgi_guards import BodySizeLimit, client_ip_resolved  # noqa: E402
from portal.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimit(django_http),
        "websocket": client_ip_resolved(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
