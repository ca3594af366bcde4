"""Create the local staff login once and print it on every run.

The password is random and kept in var/staff-login.txt (mode 600), so a
second run prints the same login instead of resetting it.
"""

from __future__ import annotations

import secrets

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction


class Command(BaseCommand):
    help = "Create (once) and print the local staff account's login."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", default="staff@localhost")

    def handle(self, *args, email: str, **options) -> None:
        path = settings.VAR_DIR / "staff-login.txt"
        User = get_user_model()
        with transaction.atomic():
            user = User.objects.filter(email__iexact=email).first()
            if user is None:
                password = secrets.token_urlsafe(12)
                user = User.objects.create_superuser(username="staff", email=email, password=password)
                EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{email}\n{password}\n")
                path.chmod(0o600)
        if path.exists():
            login, password = path.read_text().split()[:2]
            self.stdout.write(f"==> staff login: {login} / {password}  (saved in {path})")
        else:
            self.stdout.write(f"==> staff login: {email} (password set earlier by hand)")
