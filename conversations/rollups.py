"""Daily roll-ups of chat replies for the analytics page: per day, model and status, how many and their time
to first token (median and 90th percentile). A day is rolled up again as a whole."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django.db import transaction
from django.db.models import Aggregate, Count, FloatField

from conversations.models import Message, ReplyDay


class Percentile(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float) -> None:
        super().__init__(expression, fraction=float(fraction))


def replies_rollup(*, day: date) -> int:
    """Roll up ``day`` (UTC) of replies; returns how many ReplyDay rows it has."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    rows = (
        Message.objects.filter(
            role=Message.Role.ASSISTANT, created_at__gte=start, created_at__lt=start + timedelta(days=1)
        )
        .values("model", "status")
        .annotate(replies=Count("pk"), p50=Percentile("ttft_ms", 0.5), p90=Percentile("ttft_ms", 0.9))
    )
    with transaction.atomic():
        ReplyDay.objects.filter(day=day).delete()
        made = ReplyDay.objects.bulk_create(
            ReplyDay(
                day=day,
                model=row["model"],
                status=row["status"],
                replies=row["replies"],
                ttft_ms_p50=None if row["p50"] is None else round(row["p50"]),
                ttft_ms_p90=None if row["p90"] is None else round(row["p90"]),
            )
            for row in rows
        )
    return len(made)
