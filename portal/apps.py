from __future__ import annotations

from django.apps import AppConfig


class PortalConfig(AppConfig):
    """The project shell. It has no models of its own any more; it stays an
    app for its migration history (the support chat's tables began here)."""

    name = "portal"
    verbose_name = "Portal"
