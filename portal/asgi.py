"""ASGI entry point, one address for everything: HTTP through Django's WSGI
handler on a pool of threads (a2wsgi: one hop per request; Django's own
ASGI handler hops between the event loop and threads several times per
request and keeps no database connection, which made the status endpoint
five times slower, bench/http_status.py), websockets through Channels
(origin checked against ALLOWED_HOSTS, session auth). Bodies over the
upload limit are refused before Django reads them, and both see the
client's address behind TRUSTED_PROXIES (portal.asgi_guards). A running
job's status, polled with an API key, is answered from Redis on the event
loop (portal.fast_status)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

from a2wsgi import WSGIMiddleware
from django.conf import settings
from django.core.wsgi import get_wsgi_application

django_http = get_wsgi_application()  # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from portal.asgi_guards import BodySizeLimit, client_ip_resolved  # noqa: E402
from portal.fast_status import StatusFastPath  # noqa: E402
from portal.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": StatusFastPath(BodySizeLimit(WSGIMiddleware(django_http, workers=settings.WEB_THREADS))),
        "websocket": client_ip_resolved(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
