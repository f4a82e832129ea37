"""/api/v1/usage: one's own generations and tokens from the usage ledger, in total and per UTC day."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import usage_made as record


def test_usage_sums_chat_and_api_generations_per_day(api_client, api_user):
    record(api_user, prompt=10, completion=5, cached=4)
    record(api_user, prompt=20, completion=7, source="api")
    record(api_user, days_ago=2, prompt=1, completion=1)

    response = api_client.get("/api/v1/usage")

    assert response.status_code == 200
    body = response.json()
    today = timezone.now().date()
    assert body["end"] == today.isoformat()
    assert body["start"] == (today - timedelta(days=29)).isoformat()
    assert (body["generations"], body["prompt_tokens"], body["completion_tokens"]) == (3, 31, 13)
    assert body["cached_tokens"] == 4
    assert body["days"] == [
        {
            "date": (today - timedelta(days=2)).isoformat(),
            "generations": 1,
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "cached_tokens": 0,
        },
        {"date": today.isoformat(), "generations": 2, "prompt_tokens": 30, "completion_tokens": 12, "cached_tokens": 4},
    ]


def test_usage_counts_only_the_days_asked_for(api_client, api_user):
    record(api_user, days_ago=0)
    record(api_user, days_ago=3)

    body = api_client.get("/api/v1/usage?days=3").json()

    assert body["generations"] == 1
    assert len(body["days"]) == 1


def test_no_usage_is_all_zeros(api_client):
    body = api_client.get("/api/v1/usage").json()

    assert (body["generations"], body["prompt_tokens"], body["completion_tokens"], body["days"]) == (0, 0, 0, [])


@pytest.mark.parametrize("days", ["0", "367", "week", ""])
def test_a_bad_number_of_days_is_a_400(api_client, days):
    response = api_client.get(f"/api/v1/usage?days={days}")

    assert response.status_code == 400
    assert set(response.json()["field_errors"]) == {"days"}


def test_a_session_sees_its_usage_too(client, api_user):
    record(api_user)
    client.force_login(api_user)

    assert client.get("/api/v1/usage").json()["generations"] == 1
