from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class PortalConfig(AppConfig):
    """The project shell. It has no models of its own any more; it stays an
    app for its migration history (the support chat's tables began here)."""

    name = "portal"
    verbose_name = "Portal"


class PortalAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the portal's site (its index is the staff
    dashboard: portal.admin_site). Named in INSTALLED_APPS; not the default
    config of the "portal" app (PortalConfig is)."""

    default = False
    default_site = "portal.admin_site.PortalAdminSite"
