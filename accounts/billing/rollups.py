"""Daily roll-ups of the usage ledger for the analytics page: per day, plan, model and source (UsageDay),
and the day's distinct users (ActiveDay). A day is rolled up again as a whole (its rows replaced in one
transaction), so rolling up the same day any number of times gives the same rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django.db import transaction
from django.db.models import Count, Sum

from accounts.billing.models import ActiveDay, Plan, Subscription, UsageDay
from accounts.models import UsageRecord


def usage_rollup(*, day: date) -> int:
    """Roll up ``day`` (UTC) of the ledger; returns how many UsageDay rows it has."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    records = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=start + timedelta(days=1))
    plan_of = _plans_by_user()
    default = Plan.objects.filter(is_default=True).values_list("slug", flat=True).first() or ""
    groups: dict[tuple[str, str, str], dict[str, int | set[int]]] = {}
    per_user = records.values("user_id", "model", "source").annotate(
        generations=Count("pk"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        cached=Sum("cached_tokens"),
    )
    for row in per_user:
        plan = plan_of.get(row["user_id"], default) if row["user_id"] is not None else "deleted"
        group = groups.setdefault(
            (plan, row["model"], row["source"]),
            {"users": set(), "generations": 0, "prompt": 0, "completion": 0, "cached": 0},
        )
        group["users"].add(row["user_id"])  # type: ignore[union-attr]
        for field in ("generations", "prompt", "completion", "cached"):
            group[field] += row[field]  # type: ignore[operator]
    with transaction.atomic():
        UsageDay.objects.filter(day=day).delete()
        UsageDay.objects.bulk_create(
            UsageDay(
                day=day,
                plan=plan,
                model=model,
                source=source,
                users=len(group["users"]),  # type: ignore[arg-type]
                generations=group["generations"],
                prompt_tokens=group["prompt"],
                completion_tokens=group["completion"],
                cached_tokens=group["cached"],
            )
            for (plan, model, source), group in groups.items()
        )
        users = records.exclude(user=None).values("user_id").distinct().count()
        ActiveDay.objects.update_or_create(day=day, defaults={"users": users})
    return len(groups)


def _plans_by_user() -> dict[int, str]:
    """Each subscriber's plan slug now (those whose subscription grants it); everyone else is on the default."""
    rows = Subscription.objects.filter(status__in=Subscription.GRANTS_PLAN).values_list("user_id", "plan__slug")
    return dict(rows)
