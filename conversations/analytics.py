"""The staff's analytics page (``/admin/analytics/``): daily active users, generations, tokens by plan and by
model, replies by status and the time to first token, over a chosen range of days. It reads the daily
roll-ups (accounts.billing.rollups, conversations.rollups) that a beat task keeps, never the ledger itself."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.billing.charts import Series, stacked_bars
from accounts.models import ActiveDay, UsageDay
from conversations.models import Message, ReplyDay

DEFAULT_DAYS = 30
MAX_DAYS = 366
STATUSES = [Message.Status.COMPLETED, Message.Status.CANCELLED, Message.Status.FAILED]


def analytics(request: HttpRequest) -> HttpResponse:
    first, last, error = _range(request.GET.get("from"), request.GET.get("to"))
    days = [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
    usage = list(UsageDay.objects.filter(day__range=(first, last)))
    replies = list(ReplyDay.objects.filter(day__range=(first, last)))
    active = dict(ActiveDay.objects.filter(day__range=(first, last)).values_list("day", "users"))

    def per_day(rows: Iterable[tuple[date, str, int]]) -> list[Series]:
        values: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
        for day, name, value in rows:
            values[name][day] += value
        ordered = sorted(values, key=lambda name: -sum(values[name].values()))
        return [Series(name, [values[name][day] for day in days]) for name in ordered]

    charts = [
        ("Daily active users", "users", [Series("Users", [active.get(day, 0) for day in days])]),
        (
            "Generations",
            "generations",
            # Generations that were charged (completed or cancelled), by where they came from.
            per_day((u.day, "Chat replies" if u.source == "chat" else "API completions", u.generations) for u in usage),
        ),
        ("Tokens by plan", "tokens", per_day((u.day, u.plan or "(none)", u.total_tokens) for u in usage)),
        ("Tokens by model", "tokens", per_day((u.day, u.model, u.total_tokens) for u in usage)),
        ("Replies by status", "replies", per_day((r.day, r.status, r.replies) for r in replies)),
        (
            "Median time to first token of completed replies",
            "ms",
            [Series("p50", [_ttft(replies, day) for day in days])],
        ),
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Analytics",
        "first": first,
        "last": last,
        "error": error,
        "charts": [{"title": title, "chart": stacked_bars(days, series, unit=unit)} for title, unit, series in charts],
        "totals": {
            "tokens": sum(u.total_tokens for u in usage),
            "generations": sum(u.generations for u in usage),
            "replies": sum(r.replies for r in replies),
        },
        "refresh_minutes": max(1, round(settings.CELERY_BEAT_SCHEDULE["rollup-recent-days"]["schedule"] / 60)),
    }
    return render(request, "admin/analytics.html", context)


def _ttft(replies: list[ReplyDay], day: date) -> int:
    """The day's median time to first token over completed replies, each model's weighted by its replies."""
    rows = [r for r in replies if r.day == day and r.status == Message.Status.COMPLETED and r.ttft_ms_p50 is not None]
    count = sum(r.replies for r in rows)
    return round(sum(r.ttft_ms_p50 * r.replies for r in rows) / count) if count else 0  # type: ignore[operator]


def _range(since: str | None, until: str | None) -> tuple[date, date, str]:
    """The days asked for (both included), or the last DEFAULT_DAYS with a message saying what was wrong."""
    today = timezone.now().date()
    default = (today - timedelta(days=DEFAULT_DAYS - 1), today)
    try:
        first = date.fromisoformat(since) if since else default[0]
        last = date.fromisoformat(until) if until else today
    except ValueError:
        return *default, "Dates are written YYYY-MM-DD: showing the last 30 days."
    if last < first:
        return *default, "The range ends before it starts: showing the last 30 days."
    if (last - first).days >= MAX_DAYS:
        return last - timedelta(days=MAX_DAYS - 1), last, f"At most {MAX_DAYS} days are shown at once."
    return first, last, ""
