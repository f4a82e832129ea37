"""The user's usage for /api/v1/usage, read from the usage ledger (accounts.usage): every generation the
user ran, in the chat or through the API, counted once with the tokens it processed and produced."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts import usage
from accounts.models import User

TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens")


def usage_summary(*, user: User, days: int) -> dict[str, Any]:
    """Totals and per-day rows (days with usage only, oldest first) over the last ``days`` UTC days, today
    included."""
    end = timezone.now().astimezone(UTC).date()
    start = end - timedelta(days=days - 1)
    rows = (
        usage.usage_list(user=user, since=datetime.combine(start, time.min, tzinfo=UTC))
        .order_by()
        .annotate(date=TruncDate("created_at", tzinfo=UTC))
        .values("date")
        .annotate(generations=Count("pk"), **{field: Sum(field) for field in TOKEN_FIELDS})
        .order_by("date")
    )
    per_day = [
        {"date": row["date"].isoformat(), "generations": row["generations"], **{f: row[f] for f in TOKEN_FIELDS}}
        for row in rows
    ]
    totals = {key: sum(day[key] for day in per_day) for key in ("generations", *TOKEN_FIELDS)}
    return {"start": start.isoformat(), "end": end.isoformat(), **totals, "days": per_day}
