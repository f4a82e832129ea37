"""The usage ledger: one UsageRecord per generation, written by the worker that ran it.

``usage_record`` is idempotent on the generation id, so a redelivered task, or a worker that records
again after a crash between two writes, never charges twice. Reads are scoped to the requesting user.
Quotas (and Stripe) will read this ledger when billing arrives.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import Coalesce

from accounts.models import UsageRecord, User


def usage_record(
    *,
    user_id: int,
    generation_id: UUID | str,
    model: str,
    source: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    api_key_id: int | None = None,
) -> UsageRecord:
    """Record what generation ``generation_id`` used (tokens actually processed and produced, so a cancelled
    generation counts what it made). Recording a generation a second time changes nothing and returns the
    first record."""
    record, _created = UsageRecord.objects.get_or_create(
        generation_id=generation_id,
        defaults={
            "user_id": user_id,
            "model": model,
            "source": source,
            "api_key_id": api_key_id,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cached_tokens": cached_tokens,
        },
    )
    return record


def usage_list(*, user: User, since: datetime | None = None) -> QuerySet[UsageRecord]:
    """The user's records, newest first; from ``since`` on when given."""
    records = UsageRecord.objects.filter(user=user).order_by("-created_at", "-pk")
    if since is not None:
        records = records.filter(created_at__gte=since)
    return records


def usage_totals(*, user: User, since: datetime | None = None) -> dict[str, int]:
    """Token sums over the user's records (from ``since`` on): prompt, completion, cached, total, and how many
    generations."""
    totals = usage_list(user=user, since=since).aggregate(
        prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
        completion_tokens=Coalesce(Sum("completion_tokens"), 0),
        cached_tokens=Coalesce(Sum("cached_tokens"), 0),
        generations=Count("pk"),
    )
    totals["total_tokens"] = totals["prompt_tokens"] + totals["completion_tokens"]
    return totals
