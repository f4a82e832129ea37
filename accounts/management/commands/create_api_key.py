"""Mint an API key for an existing account: ``python manage.py create_api_key EMAIL [--name NAME]``.

The key is printed alone on the last line, so a script can take it with ``| tail -n 1``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import api_keys, services
from accounts.models import User, normalize_email


class Command(BaseCommand):
    help = "Create an API key for the account with this e-mail address and print it (shown once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email", help="E-mail address the account signs in with.")
        parser.add_argument("--name", default="", help="A label for the key, shown in the settings page and admin.")

    def handle(self, *args: Any, email: str, name: str, **options: Any) -> None:
        if len(name) > api_keys.NAME_MAX_LENGTH:
            raise CommandError(f"--name is {len(name)} characters long; at most {api_keys.NAME_MAX_LENGTH} fit.")
        user = User.objects.filter(email=normalize_email(email)).first()
        if user is None:
            raise CommandError(f"No account signs in with {email!r}. Create it first (sign up, or in the admin).")
        if not user.is_active:
            raise CommandError(f"The account {user.email} is deactivated; its keys would not work.")
        api_key, key = services.api_key_create(user=user, name=name)
        self.stdout.write(f"Created API key {api_key.prefix}… for {user.email}. It is shown once, on the next line:")
        self.stdout.write(key)
