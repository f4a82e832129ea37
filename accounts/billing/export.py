"""The usage ledger for a warehouse: one row per generation, with stable column names (README, "Usage
export"). Used by ``manage.py export_usage`` and the admin's CSV download."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import QuerySet

from accounts.models import UsageRecord

# Stable: a warehouse loads these by name. Add columns at the end; never rename or drop one.
COLUMNS = (
    "generation_id",
    "created_at",
    "user_id",
    "api_key_prefix",
    "source",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "total_tokens",
)


def usage_rows(records: QuerySet[UsageRecord]) -> Iterator[dict[str, Any]]:
    """The records as export rows, oldest first, read in chunks (any number of rows in bounded memory)."""
    ordered = records.select_related("api_key").order_by("created_at", "pk")
    for record in ordered.iterator(chunk_size=2000):
        yield {
            "generation_id": str(record.generation_id),
            "created_at": record.created_at.isoformat().replace("+00:00", "Z"),
            "user_id": record.user_id,
            "api_key_prefix": record.api_key.prefix if record.api_key else None,
            "source": record.source,
            "model": record.model,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "cached_tokens": record.cached_tokens,
            "total_tokens": record.total_tokens,
        }


class _Echo:
    """A file whose write returns what it was given: csv writes one line, and the caller takes it."""

    def write(self, text: str) -> str:
        return text


def csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    writer = csv.DictWriter(_Echo(), fieldnames=COLUMNS, lineterminator="\n")
    yield writer.writeheader()  # type: ignore[misc]
    for row in rows:
        yield writer.writerow({key: "" if value is None else value for key, value in row.items()})


def jsonl_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, separators=(",", ":")) + "\n"
