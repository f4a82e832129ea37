"""A plan's limits at the API's doors, against the live server and a real worker: exact under concurrency,
OpenAI's 429s and x-ratelimit-* headers for the official SDK, 429 with Retry-After on /api/v1, and a ledger
that matches what the engine made with no reservation left behind."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from accounts.billing import quotas
from accounts.billing.services import subscription_comp
from accounts.models import Plan, UsageRecord
from tests.api.openai_support import HELLO, MODEL, generation_id, raw, sdk
from tests.live import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker", "llm_model")]

DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


def on_plan(user, **limits):
    plan = Plan.objects.create(slug=f"test-{user.pk}", name="Tight", **limits)
    subscription_comp(user=user, plan=plan)
    return plan


def concurrently(count, call):
    with ThreadPoolExecutor(max_workers=50) as pool:
        return list(pool.map(lambda _: call(), range(count)))


def test_two_hundred_concurrent_completions_against_ten_a_minute_admit_exactly_ten(live_server_url, api_user, api_key):
    on_plan(api_user, api_requests_per_minute=10)
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 2, "temperature": 0}

    responses = concurrently(200, lambda: raw(live_server_url, "POST", "/v1/chat/completions", key=api_key, json=body))

    statuses = [response.status_code for response in responses]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 190
    refused = next(response for response in responses if response.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert UsageRecord.objects.filter(user=api_user).count() == 10


def test_two_hundred_concurrent_messages_against_ten_a_window_admit_exactly_ten(live_server_url, api_user, api_key):
    on_plan(api_user, messages_per_window=10, message_window_seconds=60)
    body = {"content": "Hello there", "params": {"max_tokens": 2}}

    responses = concurrently(200, lambda: raw(live_server_url, "POST", "/api/v1/conversations", key=api_key, json=body))

    statuses = [response.status_code for response in responses]
    assert statuses.count(201) == 10
    assert statuses.count(429) == 190
    refused = next(response for response in responses if response.status_code == 429)
    assert refused.json()["code"] == "rate_limit_exceeded"
    assert "You can send again in" in refused.json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_the_sdk_reads_the_rate_limit_headers_and_raises_rate_limit_error(live_server_url, api_user, api_key):
    on_plan(api_user, api_requests_per_minute=2, api_tokens_per_minute=600)
    client = sdk(live_server_url, api_key)

    first = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, max_tokens=2)
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)

    headers = first.headers
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("2", "1")
    assert headers["x-ratelimit-limit-tokens"] == "600"
    assert int(headers["x-ratelimit-remaining-tokens"]) < 600  # what the completion used, less a moment's refill
    assert DURATION.match(headers["x-ratelimit-reset-requests"]) and DURATION.match(headers["x-ratelimit-reset-tokens"])
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    models = client.models.with_raw_response.list()
    assert models.headers["x-ratelimit-limit-requests"] == "2"


def test_a_spent_monthly_budget_is_insufficient_quota(live_server_url, api_user, api_key):
    on_plan(api_user, tokens_per_month=1)
    client = sdk(live_server_url, api_key)
    client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)  # 0 used < 1: admitted

    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)

    assert refused.value.code == "insufficient_quota"
    assert refused.value.body["type"] == "insufficient_quota"


def test_a_model_outside_the_plan_does_not_exist_for_the_user(live_server_url, api_user, api_key):
    on_plan(api_user, models_allowed=["some-other-model"])
    client = sdk(live_server_url, api_key)

    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)

    assert refused.value.code == "model_not_found"
    assert [model.id for model in client.models.list()] == []


def test_finished_cancelled_and_refused_generations_leave_a_ledger_equal_to_the_engine_and_nothing_held(
    live_server_url, api_user, api_key
):
    on_plan(api_user, concurrent_generations=4, tokens_per_month=10_000_000)
    client = sdk(live_server_url, api_key)

    def complete():
        try:
            return client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, temperature=0)
        except openai.RateLimitError:
            return None

    def stream_and_leave():
        try:
            with client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=400, stream=True) as stream:
                next(iter(stream))  # the first chunk, then the client goes away: the completion is cancelled
        except openai.RateLimitError:
            pass

    with ThreadPoolExecutor(max_workers=8) as pool:
        finished = list(pool.map(lambda _: complete(), range(8)))
        list(pool.map(lambda _: stream_and_leave(), range(4)))

    wait_for(lambda: quotas.live_count(user_id=api_user.pk) == 0, timeout=60)
    done = [completion for completion in finished if completion is not None]
    recorded = {str(record.generation_id): record for record in UsageRecord.objects.filter(user=api_user)}
    assert done and len(recorded) >= len(done)
    for completion in done:
        record = recorded[str(generation_id(completion.id))]
        assert (record.prompt_tokens, record.completion_tokens) == (
            completion.usage.prompt_tokens,
            completion.usage.completion_tokens,
        )
    month = quotas._client().get(quotas._keys(api_user.pk, quotas._now_ms())[4])
    assert int(month) == sum(record.total_tokens for record in recorded.values())
