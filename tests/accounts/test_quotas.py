"""Plan limits in Redis (accounts.billing.quotas): exact under concurrency, ended by settle or release, and
never held for ever by a worker that died."""

from __future__ import annotations

import dataclasses
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from accounts import services as account_services
from accounts.billing import quotas
from accounts.billing.quotas import LimitReached, Limits
from accounts.billing.services import subscription_comp
from accounts.models import Plan, UsageRecord
from accounts.usage import usage_record
from inference import streams
from inference.redis import get_redis
from tests.factories import UserFactory

ALIVE = streams.heartbeat_key("{id}")
NONE = Limits(
    plan="Test",
    messages=None,
    window_s=60,
    tokens_month=None,
    requests_per_minute=None,
    tokens_per_minute=None,
    concurrent=None,
    models=(),
    max_context=None,
)


def reserve(user_id, limits, *, n=1, tokens=10, api=True, deadline_s=900):
    ids = [str(uuid.uuid4()) for _ in range(n)]
    quotas.reserve(
        user_id=user_id,
        limits=limits,
        generation_ids=ids,
        tokens_each=tokens,
        api=api,
        alive_key=ALIVE,
        deadline_s=deadline_s,
    )
    return ids[0] if n == 1 else ids


def admitted_of(attempts, limits, **kwargs):
    """How many of ``attempts`` concurrent reservations by one user are admitted, and the refusals."""

    def attempt(_):
        try:
            reserve(4242, limits, **kwargs)
            return None
        except LimitReached as exc:
            return exc

    with ThreadPoolExecutor(max_workers=32) as pool:
        outcomes = list(pool.map(attempt, range(attempts)))
    return outcomes.count(None), [outcome for outcome in outcomes if outcome is not None]


@pytest.mark.django_db
@pytest.mark.plan_limits
def test_a_user_without_a_subscription_is_on_the_seeded_free_plan():
    user = UserFactory()

    limits = quotas.limits_of(user_id=user.pk)

    assert limits.plan == "Free"
    assert (limits.requests_per_minute, limits.concurrent, limits.messages, limits.window_s) == (20, 2, 40, 3 * 3600)
    assert limits.tokens_month == 200_000
    assert [plan.slug for plan in Plan.objects.filter(is_public=True)] == ["free", "plus", "pro"]


@pytest.mark.django_db
def test_two_hundred_concurrent_api_requests_against_ten_a_minute_admit_exactly_ten():
    limits = dataclasses.replace(NONE, requests_per_minute=10)

    admitted, refused = admitted_of(200, limits, api=True)

    assert admitted == 10
    assert {exc.kind for exc in refused} == {"requests"}
    assert all(exc.code == "rate_limit_exceeded" and 1 <= exc.retry_after_s <= 60 for exc in refused)


@pytest.mark.django_db
def test_two_hundred_concurrent_chat_messages_against_ten_a_window_admit_exactly_ten():
    limits = dataclasses.replace(NONE, messages=10, window_s=3 * 3600)

    admitted, refused = admitted_of(200, limits, api=False)

    assert admitted == 10
    assert {exc.kind for exc in refused} == {"messages"}
    assert "You can send again in 3 hours" in refused[0].message or "You can send again in 2 h" in refused[0].message


@pytest.mark.django_db
def test_concurrent_generations_are_capped_and_a_settled_one_frees_its_slot():
    limits = dataclasses.replace(NONE, concurrent=2)
    first = reserve(7, limits)
    reserve(7, limits)

    with pytest.raises(LimitReached) as refused:
        reserve(7, limits)
    quotas.settle(user_id=7, generation_id=first, tokens=5)
    reserve(7, limits)

    assert refused.value.kind == "concurrent"
    assert quotas.live_count(user_id=7) == 2


@pytest.mark.django_db
def test_a_reservation_past_its_deadline_is_dropped_unless_its_worker_heart_beats():
    limits = dataclasses.replace(NONE, concurrent=2)
    dead = reserve(8, limits, deadline_s=0)  # claimed by a worker that died: no heartbeat
    alive = reserve(8, limits, deadline_s=0)
    get_redis().set(streams.heartbeat_key(alive), "1", ex=5)

    reserve(8, limits)  # drops the dead one's

    held = set(get_redis().hkeys(quotas._keys(8, quotas._now_ms())[0]))
    assert alive in held and dead not in held
    with pytest.raises(LimitReached):
        reserve(8, limits)


@pytest.mark.django_db
def test_a_claimed_reservation_is_held_for_the_claim_grace_then_only_while_its_worker_heart_beats():
    limits = dataclasses.replace(NONE, concurrent=1)
    queued = reserve(9, limits, deadline_s=3600)

    quotas.claimed(user_id=9, generation_id=queued)

    value = get_redis().hget(quotas._keys(9, quotas._now_ms())[0], queued)
    deadline_ms = int(value.split("|")[0])
    assert 0 < deadline_ms - quotas._now_ms() <= quotas.CLAIM_GRACE_S * 1000


@pytest.mark.django_db
def test_the_monthly_budget_counts_settled_and_reserved_tokens_and_is_overshot_by_at_most_one_reservation():
    user = UserFactory()
    usage_record(
        user_id=user.pk, generation_id=uuid.uuid4(), model="m", source="chat", prompt_tokens=300, completion_tokens=100
    )  # earlier this month: the counter is rebuilt from the ledger
    limits = dataclasses.replace(NONE, tokens_month=1000)
    first = reserve(user.pk, limits, tokens=500)  # 400 used + 0 held < 1000
    reserve(user.pk, limits, tokens=500)  # 400 + 500 < 1000

    with pytest.raises(LimitReached) as refused:
        reserve(user.pk, limits, tokens=1)  # 400 + 1000 >= 1000
    quotas.settle(user_id=user.pk, generation_id=first, tokens=50)
    reserve(user.pk, limits, tokens=500)  # 450 + 500 < 1000

    assert (refused.value.code, refused.value.kind) == ("insufficient_quota", "tokens_month")
    assert refused.value.retry_after_s >= 1
    assert int(get_redis().get(quotas._keys(user.pk, quotas._now_ms())[4])) == 450


@pytest.mark.django_db
def test_settling_twice_counts_once_and_a_release_counts_nothing():
    user = UserFactory()
    limits = dataclasses.replace(NONE, tokens_month=10_000)
    settled, released = reserve(user.pk, limits, n=2, tokens=100)

    quotas.settle(user_id=user.pk, generation_id=settled, tokens=60)
    quotas.settle(user_id=user.pk, generation_id=settled, tokens=60)  # a redelivered task
    quotas.release(user_id=user.pk, generation_id=released)

    assert int(get_redis().get(quotas._keys(user.pk, quotas._now_ms())[4])) == 60
    assert quotas.live_count(user_id=user.pk) == 0


@pytest.mark.django_db
def test_tokens_per_minute_are_taken_by_the_estimate_and_given_back_on_settle():
    user = UserFactory()
    plan = Plan.objects.create(slug="tpm", name="TPM", api_tokens_per_minute=1000)
    subscription_comp(user=user, plan=plan)  # settle reads the user's limit to cap what it gives back
    limits = quotas.limits_of(user_id=user.pk)
    generation = reserve(user.pk, limits, tokens=800)

    with pytest.raises(LimitReached) as refused:
        reserve(user.pk, limits, tokens=300)
    quotas.settle(user_id=user.pk, generation_id=generation, tokens=100)  # 700 given back
    reserve(user.pk, limits, tokens=300)
    room = quotas.headroom(user_id=user.pk, limits=limits)

    assert refused.value.kind == "tokens_minute"
    assert 590 <= room.tokens_remaining <= 610
    assert room.tokens_limit == 1000 and 0 < room.tokens_reset_s <= 60


@pytest.mark.django_db
def test_a_request_larger_than_the_tokens_per_minute_is_refused_as_too_large():
    limits = dataclasses.replace(NONE, tokens_per_minute=100)

    with pytest.raises(LimitReached) as refused:
        reserve(10, limits, tokens=101)

    assert refused.value.kind == "tokens_too_large"
    assert "Request too large" in refused.value.message


@pytest.mark.django_db
def test_deleting_an_account_keeps_its_usage_records_detached():
    user = UserFactory()
    record = usage_record(
        user_id=user.pk, generation_id=uuid.uuid4(), model="m", source="api", prompt_tokens=3, completion_tokens=4
    )

    account_services.user_delete(user=user)

    record.refresh_from_db()
    assert record.user_id is None
    assert (record.prompt_tokens, record.completion_tokens) == (3, 4)
    assert UsageRecord.objects.count() == 1


@pytest.mark.usefixtures("llm_model")
def test_a_plans_longest_context_and_models_are_enforced_before_anything_is_written(monkeypatch):
    from conversations import services
    from conversations.errors import ContextTooLong, NotAllowed
    from conversations.models import Conversation

    monkeypatch.setattr(services, "reply_enqueue", lambda message_id: True)
    short, narrow = UserFactory(), UserFactory()
    subscription_comp(user=short, plan=Plan.objects.create(slug="short", name="Short", max_context_tokens=40))
    subscription_comp(user=narrow, plan=Plan.objects.create(slug="narrow", name="Narrow", models_allowed=["other"]))

    with pytest.raises(ContextTooLong) as too_long:
        services.message_send(user=short, conversation_id=None, parent_id=None, content="word " * 60)
    with pytest.raises(NotAllowed) as not_included:
        services.message_send(user=narrow, conversation_id=None, parent_id=None, content="Hello")
    fits = services.message_send(user=short, conversation_id=None, parent_id=None, content="Hi")

    assert "the Short plan reads at most 40" in too_long.value.message
    assert not_included.value.code == "model_not_in_plan"
    assert Conversation.objects.filter(owner__in=[short, narrow]).count() == 1
    reply = fits.assistant_message
    assert reply.params["max_tokens"] <= 40 - 1  # capped to the room the plan's context leaves


@pytest.mark.django_db
def test_a_limit_of_zero_refuses_with_a_clear_answer():
    no_messages = dataclasses.replace(NONE, messages=0, window_s=600)
    no_api = dataclasses.replace(NONE, requests_per_minute=0)

    with pytest.raises(LimitReached) as messages:
        reserve(11, no_messages, api=False)
    with pytest.raises(LimitReached) as requests:
        reserve(11, no_api, api=True)

    assert (messages.value.kind, messages.value.retry_after_s) == ("messages", 600)
    assert (requests.value.kind, requests.value.retry_after_s) == ("requests", 60)


@pytest.mark.django_db
def test_a_completion_given_up_by_its_client_before_a_worker_took_it_gives_its_slot_back_at_once():
    from conversations import generations
    from conversations.openai_api import streaming

    limits = dataclasses.replace(NONE, concurrent=2)
    queued, taken = reserve(12, limits), reserve(12, limits)
    get_redis().set(generations.claim_key(taken), "1", ex=60)  # a worker has this one: it will end it

    streaming._cancel([queued, taken], 12)

    assert quotas.held(user_id=12, alive_key=ALIVE) == [taken]
    assert get_redis().exists(streams.cancel_key(queued)) and get_redis().exists(streams.cancel_key(taken))
