"""Billing for staff: plans and subscriptions in the admin, usage totals and CSV, daily roll-ups, the
analytics page, and ``manage.py export_usage``."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from accounts.billing import quotas
from accounts.billing.export import COLUMNS
from accounts.billing.services import subscription_comp
from accounts.models import ActiveDay, Plan, Subscription, UsageDay
from conversations.models import Message, ReplyDay
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.factories import UserFactory, usage_made

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_staff_comp_a_plan_in_the_admin_and_it_applies_at_once(staff):
    user = UserFactory()
    pro = Plan.objects.get(slug="pro")
    assert quotas.limits_of(user_id=user.pk).plan == "Test (no limits)"  # cached now

    response = staff.post(
        reverse("admin:accounts_subscription_add"),
        {"user": user.pk, "plan": pro.pk, "status": "active", "comped": "on"},
    )

    assert response.status_code == 302
    assert Subscription.objects.get(user=user).comped
    assert quotas.limits_of(user_id=user.pk).plan == "Pro"


def test_editing_a_plan_in_the_admin_changes_its_users_limits_at_once(staff):
    user = UserFactory()
    plan = Plan.objects.get(slug="plus")
    subscription_comp(user=user, plan=plan)
    assert quotas.limits_of(user_id=user.pk).concurrent == 4
    form = {
        field: getattr(plan, field) if getattr(plan, field) is not None else ""
        for field in (
            "name",
            "slug",
            "description",
            "price_cents",
            "currency",
            "stripe_price_id",
            "sort_order",
            "messages_per_window",
            "message_window_seconds",
            "tokens_per_month",
            "api_requests_per_minute",
            "api_tokens_per_minute",
            "max_context_tokens",
        )
    }

    response = staff.post(
        reverse("admin:accounts_plan_change", args=[plan.pk]),
        {**form, "is_public": "on", "concurrent_generations": 9, "models_allowed": "[]"},
    )

    assert response.status_code == 302, response.content[:3000]
    assert quotas.limits_of(user_id=user.pk).concurrent == 9


def test_the_usage_list_shows_the_totals_of_what_is_filtered(staff):
    ada, bob = UserFactory(), UserFactory()
    usage_made(ada, prompt=100, completion=20)
    usage_made(ada, source="api", prompt=7, completion=3)
    usage_made(bob, prompt=1000, completion=1)

    response = staff.get(reverse("admin:accounts_usagerecord_changelist"), {"source__exact": "chat"})

    assert response.context["usage_totals"] == {
        "generations": 2,
        "prompt_tokens": 1100,
        "completion_tokens": 21,
        "cached_tokens": 0,
    }


def test_the_admin_downloads_selected_usage_as_csv_in_the_export_columns(staff):
    user = UserFactory()
    first = usage_made(user, prompt=3, completion=4)

    response = staff.post(
        reverse("admin:accounts_usagerecord_changelist"),
        {"action": "export_csv", "_selected_action": [first.pk]},
    )

    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert response["Content-Type"].startswith("text/csv")
    assert tuple(rows[0]) == COLUMNS
    assert rows == [
        {
            "generation_id": str(first.generation_id),
            "created_at": first.created_at.isoformat().replace("+00:00", "Z"),
            "user_id": str(user.pk),
            "api_key_prefix": "",
            "source": "chat",
            "model": "smollm2-135m-instruct",
            "prompt_tokens": "3",
            "completion_tokens": "4",
            "cached_tokens": "0",
            "total_tokens": "7",
        }
    ]


def test_export_usage_writes_csv_or_jsonl_for_the_days_asked(tmp_path, capsys):
    user = UserFactory()
    usage_made(user, days_ago=10)
    recent = usage_made(user, source="api", prompt=1, completion=2)
    since = (timezone.now() - timedelta(days=2)).date().isoformat()

    call_command("export_usage", "--since", since, "--format", "jsonl", "--output", str(tmp_path / "u.jsonl"))
    call_command("export_usage", "--since", since)

    (line,) = (tmp_path / "u.jsonl").read_text().splitlines()
    assert json.loads(line)["generation_id"] == str(recent.generation_id)
    assert list(json.loads(line)) == list(COLUMNS)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ",".join(COLUMNS) and len(out) == 2
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("export_usage", "--since", "last week")


def test_a_days_rollup_counts_users_generations_and_tokens_by_plan_model_and_source_and_can_run_again():
    ada, bob = UserFactory(), UserFactory()
    subscription_comp(user=bob, plan=Plan.objects.get(slug="pro"))
    usage_made(ada, model="m1", prompt=10, completion=5)
    usage_made(ada, model="m1", prompt=20, completion=5)
    usage_made(bob, model="m1", prompt=1, completion=1)
    usage_made(bob, model="m2", source="api", prompt=100, completion=50)
    usage_made(bob, days_ago=1)  # another day
    reply = add_exchange(ConversationFactory(owner=ada))[1]
    Message.objects.filter(pk=reply.pk).update(ttft_ms=120, model="m1")
    today = timezone.now().date()

    call_command("rollup_days", "--since", today.isoformat())
    call_command("rollup_days", "--since", today.isoformat())

    rows = {
        (r.plan, r.model, r.source): (r.users, r.generations, r.total_tokens)
        for r in UsageDay.objects.filter(day=today)
    }
    assert rows == {
        ("test-unlimited", "m1", "chat"): (1, 2, 40),
        ("pro", "m1", "chat"): (1, 1, 2),
        ("pro", "m2", "api"): (1, 1, 150),
    }
    assert ActiveDay.objects.get(day=today).users == 2
    (replies,) = ReplyDay.objects.filter(day=today, model="m1")
    assert (replies.status, replies.replies, replies.ttft_ms_p50) == ("completed", 1, 120)


def test_the_analytics_page_charts_the_rollups_for_staff_only(staff, client):
    user = UserFactory()
    usage_made(user, model="m1", prompt=300, completion=200)
    call_command("rollup_days", "--since", timezone.now().date().isoformat())

    page = staff.get(reverse("admin_analytics"))
    bad = staff.get(reverse("admin_analytics"), {"from": "yesterday"})
    staff.logout()
    client.force_login(UserFactory())
    refused = client.get(reverse("admin_analytics"))

    assert page.status_code == 200
    for title in (
        "Daily active users",
        "Generations",
        "Tokens by plan",
        "Tokens by model",
        "Replies by status",
        "Median time to first token",
    ):
        assert title.encode() in page.content
    assert b"500 tokens" in page.content and b"test-unlimited: 500" in page.content
    assert b"Dates are written YYYY-MM-DD" in bad.content
    assert refused.status_code == 302 and reverse("admin:login") in refused.url


def test_the_default_plan_cannot_be_unticked_only_handed_to_another(staff):
    default = Plan.objects.get(is_default=True)
    free = Plan.objects.get(slug="free")
    form = {
        "name": free.name,
        "slug": free.slug,
        "price_cents": 0,
        "currency": "usd",
        "sort_order": 0,
        "message_window_seconds": 3600,
        "models_allowed": "[]",
        "is_public": "on",
    }

    untick = staff.post(
        reverse("admin:accounts_plan_change", args=[default.pk]),
        {
            **form,
            "name": default.name,
            "slug": default.slug,
        },
    )
    handed = staff.post(reverse("admin:accounts_plan_change", args=[free.pk]), {**form, "is_default": "on"})

    assert untick.status_code == 200 and b"make another plan the default instead" in untick.content
    assert handed.status_code == 302, handed.context["adminform"].form.errors
    assert list(Plan.objects.filter(is_default=True)) == [free]
