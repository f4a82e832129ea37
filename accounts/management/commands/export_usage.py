"""Export the usage ledger for a warehouse:
``python manage.py export_usage --since 2026-12-01 [--until 2027-01-01] [--format csv|jsonl] [--output FILE]``.

Rows are generations, oldest first, with the columns of accounts.billing.export.COLUMNS (documented in the
README); dates are UTC days, ``--until`` excluded. Writes to standard output unless ``--output`` is given.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, date, datetime, time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.billing.export import csv_lines, jsonl_lines, usage_rows
from accounts.models import UsageRecord


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date: write it as YYYY-MM-DD.") from None


class Command(BaseCommand):
    help = "Write the usage ledger (one row per generation) as CSV or JSON Lines, from --since on."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, help="First day (UTC), YYYY-MM-DD.")
        parser.add_argument("--until", help="Day after the last (UTC), YYYY-MM-DD; default: no end.")
        parser.add_argument("--format", choices=["csv", "jsonl"], default="csv")
        parser.add_argument("--output", help="A file to write; default: standard output.")

    def handle(self, *args: Any, since: str, until: str | None, output: str | None, **options: Any) -> None:
        start = datetime.combine(_day(since), time.min, tzinfo=UTC)
        records = UsageRecord.objects.filter(created_at__gte=start)
        if until:
            end = datetime.combine(_day(until), time.min, tzinfo=UTC)
            if end <= start:
                raise CommandError("--until must be after --since.")
            records = records.filter(created_at__lt=end)
        lines = (csv_lines if options["format"] == "csv" else jsonl_lines)(usage_rows(records))
        count = -1 if options["format"] == "csv" else 0  # the CSV header is no row
        with open(output, "w", newline="", encoding="utf-8") if output else nullcontext() as out:
            for line in lines:
                if out is None:
                    self.stdout.write(line, ending="")
                else:
                    out.write(line)
                count += 1
        self.stderr.write(f"{max(count, 0)} rows")
