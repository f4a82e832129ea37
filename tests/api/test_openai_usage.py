"""The usage ledger: one record per generation (chat reply or API completion), never two, each user's own.
Also the completion task's idempotency (a redelivery runs nothing twice and charges nothing twice)."""

from __future__ import annotations

import time
import uuid

import pytest

from accounts.models import ApiKey, UsageRecord
from accounts.usage import usage_list, usage_record, usage_totals
from conversations import generations
from conversations.models import Message
from inference import streams
from inference.redis import get_redis
from tests.api.openai_support import HELLO, MODEL, generation_id, sdk
from tests.conversations.factories import queued_turn
from tests.factories import UserFactory


def record(user, **fields):
    defaults = {"model": MODEL, "source": "api", "prompt_tokens": 10, "completion_tokens": 5, "cached_tokens": 2}
    return usage_record(user_id=user.pk, generation_id=uuid.uuid4(), **{**defaults, **fields})


def events(generation):
    return streams.read_events(generation, after=0)


@pytest.mark.django_db
def test_recording_a_generation_twice_keeps_the_first_record():
    user = UserFactory()
    generation = uuid.uuid4()
    first = usage_record(
        user_id=user.pk, generation_id=generation, model=MODEL, source="chat", prompt_tokens=3, completion_tokens=4
    )

    again = usage_record(
        user_id=user.pk, generation_id=generation, model=MODEL, source="chat", prompt_tokens=99, completion_tokens=99
    )

    assert again.pk == first.pk
    assert UsageRecord.objects.get().completion_tokens == 4


@pytest.mark.django_db
def test_each_user_reads_only_their_own_usage():
    ada, grace = UserFactory(), UserFactory()
    record(ada, prompt_tokens=10, completion_tokens=5, cached_tokens=2)
    record(ada, prompt_tokens=1, completion_tokens=1, cached_tokens=0)
    theirs = record(grace)

    assert theirs not in usage_list(user=ada)
    assert usage_totals(user=ada) == {
        "prompt_tokens": 11,
        "completion_tokens": 6,
        "cached_tokens": 2,
        "total_tokens": 17,
        "generations": 2,
    }
    assert usage_totals(user=UserFactory())["generations"] == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("llm_model")
def test_a_chat_reply_records_its_usage_once():
    user = UserFactory()
    reply = queued_turn(user, content="Hello", params={"temperature": 0, "max_tokens": 6})

    generations.reply_generate(reply.pk)
    generations.reply_generate(reply.pk)  # a redelivery

    reply.refresh_from_db()
    usage = UsageRecord.objects.get()
    assert (usage.user, usage.generation_id, usage.source, usage.model) == (user, reply.pk, "chat", MODEL)
    assert (usage.prompt_tokens, usage.completion_tokens) == (reply.prompt_tokens, 6)
    assert usage.api_key is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("llm_model")
def test_a_reply_cancelled_before_it_ran_is_recorded_with_no_tokens_and_a_failed_one_not_at_all(settings):
    user = UserFactory()
    cancelled, failed = (queued_turn(user, content="Hi") for _ in range(2))
    streams.request_cancel(cancelled.pk)
    Message.objects.filter(pk=failed.pk).update(model="no-such-model")

    generations.reply_generate(cancelled.pk)
    generations.reply_generate(failed.pk)

    assert Message.objects.get(pk=failed.pk).status == Message.Status.FAILED
    usage = UsageRecord.objects.get()
    assert (usage.generation_id, usage.completion_tokens) == (cancelled.pk, 0)


def completion_payload(user, api_key=None, **params):
    return {
        "user_id": user.pk,
        "api_key_id": api_key.pk if api_key else None,
        "model": MODEL,
        "messages": HELLO,
        "params": {"temperature": 0, "max_tokens": 5, **params},
        "created": time.time(),
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("llm_model")
def test_a_redelivered_completion_runs_once_and_is_charged_once():
    user = UserFactory()
    generation = uuid.uuid4()
    streams.lease_renew([generation])  # its reader waits for it

    generations.completion_generate(generation, completion_payload(user))
    first = events(generation)
    generations.completion_generate(generation, completion_payload(user))

    assert events(generation) == first
    assert [event["type"] for event in first].count("done") == 1
    assert first[-1]["usage"]["completion_tokens"] == 5
    assert UsageRecord.objects.get().generation_id == generation


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("llm_model")
def test_a_redelivered_completion_whose_worker_died_ends_its_stream_with_an_error():
    user = UserFactory()
    generation = uuid.uuid4()
    get_redis().set(f"djinn:gen:{generation}:claim", "1", ex=60)  # claimed by a worker that then died
    streams.StreamWriter(generation).delta("Half a rep")

    generations.completion_generate(generation, completion_payload(user))

    last = events(generation)[-1]
    assert (last["type"], last["message"]) == ("error", generations.COMPLETION_ORPHANED)
    assert not UsageRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("llm_model")
def test_a_completion_whose_worker_died_is_charged_for_what_it_streamed_once():
    user = UserFactory()
    generation = uuid.uuid4()
    get_redis().set(f"djinn:gen:{generation}:claim", "1", ex=60)  # claimed by a worker that then died
    writer = streams.StreamWriter(generation)
    writer._append("delta", text="Half", tokens=2)
    writer._append("delta", text=" a reply", tokens=5)
    payload = {**completion_payload(user), "prompt_tokens": 9}

    generations.completion_generate(generation, payload)  # a redelivery finds it orphaned
    generations.completion_charge_streamed(generation, payload)  # and its reader noticed too

    usage = UsageRecord.objects.get()
    assert (usage.generation_id, usage.prompt_tokens, usage.completion_tokens) == (generation, 9, 5)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("llm_model")
def test_a_completion_whose_reader_is_gone_before_it_starts_runs_nothing_and_charges_nothing():
    user = UserFactory()
    generation = uuid.uuid4()  # no lease: its client left (or its web process died) while it was queued

    generations.completion_generate(generation, completion_payload(user))

    (event,) = events(generation)
    assert (event["type"], event["code"]) == ("error", "reader_gone")
    assert not UsageRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker", "llm_model")
def test_an_api_completion_is_charged_to_its_user_and_key_and_to_no_one_else(
    live_server_url, api_user, api_key, other_api_user, make_api_client
):
    make_api_client(other_api_user)  # Grace has a key too

    completion = sdk(live_server_url, api_key).chat.completions.create(
        model=MODEL, messages=HELLO, temperature=0, max_tokens=7
    )

    usage = UsageRecord.objects.get()
    assert usage.generation_id == generation_id(completion.id)
    assert (usage.user, usage.api_key, usage.source) == (api_user, ApiKey.objects.get(user=api_user), "api")
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (
        completion.usage.prompt_tokens,
        7,
        completion.usage.prompt_tokens_details.cached_tokens,
    )
    assert list(usage_list(user=api_user)) == [usage]
    assert not usage_list(user=other_api_user).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("llm_model")
def test_a_reply_whose_conversation_is_deleted_while_it_runs_is_charged_for_what_it_made():
    from conversations.models import Conversation

    user = UserFactory()
    reply = queued_turn(user)
    running = generations.ReplyGeneration(Message.objects.select_related("conversation").get(pk=reply.pk))
    Conversation.objects.filter(pk=reply.conversation_id).delete()

    running.taken_away(None)

    usage = UsageRecord.objects.get()
    assert (usage.generation_id, usage.user, usage.source) == (reply.pk, user, "chat")
