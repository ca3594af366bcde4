from __future__ import annotations

from django.urls import path

from support.consumers import StaffSupportConsumer, SupportConsumer

websocket_urlpatterns = [
    path("ws/support/", SupportConsumer.as_asgi()),
    path("ws/support/<uuid:conversation_id>/", StaffSupportConsumer.as_asgi()),
]
