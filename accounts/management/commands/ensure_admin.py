"""Create the first admin account if there is none (``make run`` calls this on every start)."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email

from accounts.models import User, normalize_email


class Command(BaseCommand):
    help = "Create a superuser from DJINN_ADMIN_EMAIL / DJINN_ADMIN_PASSWORD (or generated) if none exists."

    def handle(self, *args: Any, **options: Any) -> None:
        if User.objects.filter(is_superuser=True).exists():
            return
        email = normalize_email(settings.DJINN_ADMIN_EMAIL or "admin@localhost")
        try:
            validate_email(email)
        except ValidationError:
            raise CommandError(f"DJINN_ADMIN_EMAIL={email!r} is not a valid e-mail address.") from None
        password = settings.DJINN_ADMIN_PASSWORD or secrets.token_urlsafe(12)
        User.objects.create_superuser(email=email, password=password, display_name="Admin")
        self.stdout.write(self.style.SUCCESS("Created the first admin account."))
        self.stdout.write(f"  e-mail:   {email}")
        if settings.DJINN_ADMIN_PASSWORD:
            self.stdout.write("  password: (from DJINN_ADMIN_PASSWORD)")
        else:
            self.stdout.write(f"  password: {password}   <- shown once; change it after logging in")
