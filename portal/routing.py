from __future__ import annotations

from generation.routing import websocket_urlpatterns as generation_websockets
from support.routing import websocket_urlpatterns as support_websockets

websocket_urlpatterns = [*generation_websockets, *support_websockets]
