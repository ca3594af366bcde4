from __future__ import annotations

from django.core.management.base import BaseCommand

from generation.catalog import catalog_seed


class Command(BaseCommand):
    help = "Add the seeded checkpoints that are missing (never overwrites staff edits)."

    def handle(self, *args, **options) -> None:
        created = catalog_seed()
        self.stdout.write(f"==> catalog: {len(created)} checkpoint(s) added")
