from __future__ import annotations

from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Generation"

    def ready(self) -> None:
        from generation.moderation import prompt_checks

        prompt_checks()  # a MODERATION_PROMPT_CHECKS path that does not import stops the start here
