"""The user's usage for /api/v1/usage, read from their replies' token counts.

Until the usage ledger (accounts' UsageRecord) exists, replies are the record: each finished or
cancelled reply counts once, with the tokens saved on it. This misses /v1 requests (they store no
conversation) and replies of deleted conversations; the ledger will count both, and this module is
the one place to switch over.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import User
from conversations.models import Message

TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens")


def usage_summary(*, user: User, days: int) -> dict[str, Any]:
    """Totals and per-day rows (days with usage only, oldest first) over the last ``days`` UTC days, today
    included."""
    end = timezone.now().astimezone(timezone.UTC).date()
    start = end - timedelta(days=days - 1)
    rows = (
        Message.objects.filter(
            conversation__owner=user,
            role=Message.Role.ASSISTANT,
            created_at__gte=datetime.combine(start, time.min, tzinfo=timezone.UTC),
        )
        .annotate(date=TruncDate("created_at", tzinfo=timezone.UTC))
        .values("date")
        .annotate(generations=Count("id"), **{field: Sum(field) for field in TOKEN_FIELDS})
        .order_by("date")
    )
    per_day = [_day(row) for row in rows]
    totals = {key: sum(day[key] for day in per_day) for key in ("generations", *TOKEN_FIELDS)}
    return {"start": start.isoformat(), "end": end.isoformat(), **totals, "days": per_day}


def _day(row: dict[str, Any]) -> dict[str, Any]:
    day: date = row["date"]
    return {"date": day.isoformat(), "generations": row["generations"], **{f: row[f] or 0 for f in TOKEN_FIELDS}}
