from __future__ import annotations

from django.urls import path

from billing import views

urlpatterns = [
    path("billing/buy/<int:pack_id>/", views.buy, name="billing_buy"),
    path("billing/success/", views.success, name="billing_success"),
    path("billing/cancel/", views.cancel, name="billing_cancel"),
    path("billing/purchases/", views.purchases, name="purchases"),
    path("billing/stripe/webhook/", views.stripe_webhook, name="stripe_webhook"),
]
