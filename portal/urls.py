from __future__ import annotations

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path

from generation.api import api
from portal import support_views, views

# The admin login goes through allauth's login, so its rate limits (and any
# later MFA) protect the admin too. Staff who are signed in go straight in.
admin.autodiscover()
admin.site.login = secure_admin_login(admin.site.login)
admin.site.site_header = "img2img portal staff"
admin.site.site_title = "img2img portal staff"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("support/messages", support_views.widget_messages, name="support_messages"),
    path("support/inbox/", support_views.inbox, name="support_inbox"),
    path("support/inbox/<uuid:conversation_id>/", support_views.inbox_conversation, name="support_conversation"),
    path("api/v1/", api.urls),
    path("", include("generation.urls")),
    path("", include("billing.urls")),
    path("accounts/", include("allauth.urls")),
    path("account/", include("accounts.urls")),
    path("admin/", admin.site.urls),
]
