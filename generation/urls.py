from __future__ import annotations

from django.urls import path

from generation import views

urlpatterns = [
    path("models/", views.models_page, name="models"),
]
