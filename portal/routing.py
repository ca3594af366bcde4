from __future__ import annotations

from django.urls import path

from generation.consumers import JobConsumer
from portal.consumers import StaffSupportConsumer, SupportConsumer

websocket_urlpatterns = [
    path("ws/jobs/<uuid:job_id>/", JobConsumer.as_asgi()),
    path("ws/support/", SupportConsumer.as_asgi()),
    path("ws/support/<uuid:conversation_id>/", StaffSupportConsumer.as_asgi()),
]
