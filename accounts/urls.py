from __future__ import annotations

from django.urls import path

from accounts import views

urlpatterns = [
    path("", views.account, name="account"),
    path("api-keys/", views.api_key_new, name="api_key_new"),
    path("api-keys/<int:key_id>/revoke/", views.api_key_delete, name="api_key_revoke"),
]
