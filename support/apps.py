from __future__ import annotations

from django.apps import AppConfig


class SupportConfig(AppConfig):
    name = "support"
    verbose_name = "Support chat"

    def ready(self) -> None:
        from support import receivers  # noqa: F401  (connects allauth's login signal)
