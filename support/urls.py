from __future__ import annotations

from django.urls import path

from support import views

urlpatterns = [
    path("messages", views.widget_messages, name="support_messages"),
    path("inbox/", views.inbox_page, name="support_inbox"),
    path("inbox/<uuid:conversation_id>/", views.conversation_page, name="support_conversation"),
]
