"""Roll up days for the analytics page: ``python manage.py rollup_days --since 2026-11-01 [--until DAY]``.

The beat task keeps today and yesterday fresh; this fills in older days (after an import, or a first
deployment with history). Rolling up a day again replaces its rows.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.billing.rollups import usage_rollup
from conversations.rollups import replies_rollup


class Command(BaseCommand):
    help = "Roll up the usage ledger and the replies of each day from --since to --until (UTC, both included)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, help="First day, YYYY-MM-DD.")
        parser.add_argument("--until", help="Last day, YYYY-MM-DD; default: today.")

    def handle(self, *args: Any, since: str, until: str | None, **options: Any) -> None:
        try:
            first = date.fromisoformat(since)
            last = date.fromisoformat(until) if until else timezone.now().date()
        except ValueError:
            raise CommandError("Write days as YYYY-MM-DD.") from None
        if last < first:
            raise CommandError("--until must not be before --since.")
        day = first
        while day <= last:
            usage_rollup(day=day)
            replies_rollup(day=day)
            day += timedelta(days=1)
        self.stdout.write(f"Rolled up {(last - first).days + 1} days, {first} to {last}.")
