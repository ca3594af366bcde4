"""Create the local staff login once (development only).

The password is random and written to var/staff-login.txt, a file created
with mode 600 before the secret goes in, so it is never readable by others,
not even for a moment. The password is printed on the first run only; later
runs say where the file is.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction


class Command(BaseCommand):
    help = "Create (once) the local staff account; print its login the first time."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", default="staff@localhost")

    def handle(self, *args, email: str, **options) -> None:
        path = settings.VAR_DIR / "staff-login.txt"
        User = get_user_model()
        with transaction.atomic():
            if User.objects.filter(email__iexact=email).exists():
                where = f"saved in {path}" if path.exists() else "password set earlier by hand"
                self.stdout.write(f"==> staff login: {email} ({where})")
                return
            password = secrets.token_urlsafe(12)
            user = User.objects.create_superuser(username="staff", email=email, password=password)
            EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
            _write_secret(path, f"{email}\n{password}\n")
        self.stdout.write(f"==> staff login: {email} / {password}  (saved in {path}; shown this once)")


def _write_secret(path: Path, text: str) -> None:
    """Create the file owner-only (0600) before any secret is in it; an
    older file from a previous database is replaced, never widened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
