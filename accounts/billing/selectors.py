"""Reads for the billing page: the user's plan, their use of each limit now, and their daily tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.billing import quotas
from accounts.billing.models import Plan, Subscription
from accounts.models import UsageRecord, User

CHART_DAYS = 30


@dataclass(frozen=True)
class Meter:
    """One limit and the user's use of it now; ``limit`` None is no limit."""

    label: str
    used: int
    limit: int | None
    note: str = ""

    @property
    def percent(self) -> int:
        if self.limit is None:
            return 0
        return 100 if self.limit == 0 else min(100, round(100 * self.used / self.limit))

    @property
    def level(self) -> str:
        full = self.limit is not None and self.used >= self.limit
        return "full" if full else "high" if self.percent >= 80 else "ok"


@dataclass(frozen=True)
class Day:
    day: date
    chat: int
    api: int

    @property
    def total(self) -> int:
        return self.chat + self.api


@dataclass(frozen=True)
class Overview:
    plan: Plan
    subscription: Subscription | None
    meters: list[Meter]
    days: list[Day]
    plans: list[Plan]


def billing_overview(*, user: User) -> Overview:
    plan, subscription = quotas.plan_of(user_id=user.pk)
    limits = quotas.Limits.of(plan)
    use = quotas.use_now(user_id=user.pk, limits=limits)
    window = quotas.duration_words(limits.window_s)
    meters = [
        Meter(_("Messages in %(window)s") % {"window": window}, use.messages, limits.messages, _("a rolling window")),
        Meter(_("Tokens this month"), use.tokens_month, limits.tokens_month, _("prompt and reply, from the 1st (UTC)")),
        Meter(_("API requests this minute"), use.requests_minute, limits.requests_per_minute),
        Meter(_("Replies being written"), use.live, limits.concurrent),
    ]
    return Overview(
        plan=plan,
        subscription=subscription,
        meters=meters,
        days=daily_tokens(user=user),
        plans=list(Plan.objects.filter(is_public=True)),
    )


def daily_tokens(*, user: User, days: int = CHART_DAYS) -> list[Day]:
    """The user's tokens per day (UTC) for the last ``days`` days, chat and API apart, oldest first."""
    today = timezone.now().date()
    start = today - timedelta(days=days - 1)
    rows = (
        UsageRecord.objects.filter(user=user, created_at__date__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values("day", "source")
        .annotate(prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
    )
    totals = {(row["day"], row["source"]): row["prompt"] + row["completion"] for row in rows}
    return [
        Day(day, totals.get((day, UsageRecord.Source.CHAT), 0), totals.get((day, UsageRecord.Source.API), 0))
        for day in (start + timedelta(days=offset) for offset in range(days))
    ]
