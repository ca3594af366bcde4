from __future__ import annotations

from django.core.management.base import BaseCommand

from catalog.seeds import catalog_seed, catalog_seed_controlnets


class Command(BaseCommand):
    help = "Add the seeded checkpoints and ControlNets that are missing (never overwrites staff edits)."

    def handle(self, *args, **options) -> None:
        created = catalog_seed()
        controls = catalog_seed_controlnets()
        self.stdout.write(f"==> catalog: {len(created)} checkpoint(s) and {len(controls)} ControlNet(s) added")
