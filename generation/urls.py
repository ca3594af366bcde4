from __future__ import annotations

from django.urls import path

from generation import views

urlpatterns = [
    path("models/", views.models_page, name="models"),
    path("models/<slug:slug>/preview", views.model_preview, name="model_preview"),
    path("create/", views.create, name="create"),
    path("jobs/", views.history, name="history"),
    path("jobs/<uuid:job_id>/", views.job_page, name="job"),
    path("jobs/<uuid:job_id>/cancel/", views.job_cancel_view, name="job_cancel"),
    path("jobs/<uuid:job_id>/again/", views.job_again_view, name="job_again"),
    path("webhooks/secret/rotate/", views.webhook_secret_rotate_view, name="webhook_secret_rotate"),
]
