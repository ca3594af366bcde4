from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from catalog.seeds import (
    catalog_register_test_checkpoints,
    catalog_register_test_controlnets,
    catalog_register_test_loras,
)


class Command(BaseCommand):
    help = (
        "Build the small random-weight test checkpoints, ControlNets and LoRAs (and a test image moderation classifier "
        "and depth annotator) under "
        "MODELS_DIR and add the checkpoints to the catalog."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--force", action="store_true", help="Rebuild checkpoints that exist.")

    def handle(self, *args, force: bool, **options) -> None:
        from workers.testweights import (
            ANNOTATORS_FOLDER,
            MODERATION_FOLDER,
            RANDOM_CONTROLNETS,
            RANDOM_LORAS,
            build_all,
        )

        built = build_all(Path(settings.MODELS_DIR), force=force)
        created = catalog_register_test_checkpoints(built)
        controls = catalog_register_test_controlnets(RANDOM_CONTROLNETS)
        loras = catalog_register_test_loras(RANDOM_LORAS)
        self.stdout.write(
            f"==> {len(built)} test checkpoints (random weights) in {settings.MODELS_DIR}; "
            f"{len(created)} added to the catalog; {len(RANDOM_CONTROLNETS)} test ControlNets ({len(controls)} "
            f"added); {len(RANDOM_LORAS)} test LoRAs ({len(loras)} added); a depth annotator in "
            f"{ANNOTATORS_FOLDER} (ANNOTATORS_DIR turns it on); a test image "
            f"moderation classifier in "
            f"{MODERATION_FOLDER} (MODERATION_IMAGE_MODEL={MODERATION_FOLDER} turns it on; its scores are arbitrary)"
        )
