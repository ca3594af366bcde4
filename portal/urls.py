from __future__ import annotations

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path

from portal import metrics, views
from portal.api import api

# The admin login goes through allauth's login, so its rate limits (and any
# later MFA) protect the admin too. Staff who are signed in go straight in.
admin.autodiscover()
admin.site.login = secure_admin_login(admin.site.login)

urlpatterns = [
    path("", views.home, name="home"),
    path("pricing/", views.pricing, name="pricing"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("status/", views.status_page, name="status"),
    path("status.json", views.status_json, name="status_json"),
    path("support/", include("support.urls")),
    path("api/v1/", api.urls),
    path("", include("generation.urls")),
    path("", include("billing.urls")),
    path("accounts/", include("allauth.urls")),
    path("account/", include("accounts.urls")),
    path("admin/", admin.site.urls),
]
