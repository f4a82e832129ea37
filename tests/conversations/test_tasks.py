"""The reply, title and sweeper tasks, run in this process against the tiny model (no worker needed)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import DatabaseError
from django.utils import timezone
from prometheus_client import REGISTRY

from config.celery import app
from conversations import prompts, replies, services, titles
from conversations.models import Conversation, Message
from conversations.tasks import generate_reply, generate_title, sweep_stale_generations
from inference import runtime, stream_batching, streams
from inference.engine import SamplingParams
from inference.models import LLMModel
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.factories import UserFactory

pytestmark = pytest.mark.usefixtures("llm_model")
GREEDY = {"temperature": 0, "max_tokens": 20}


@pytest.fixture
def user():
    return UserFactory()


def queued_reply(user, *, content="Hello there", params=GREEDY) -> Message:
    return services.message_send(
        user=user, conversation_id=None, parent_id=None, content=content, params=params
    ).assistant_message


def events(message):
    return streams.read_events(message.pk, after=0)


def finished_count(status):
    value = REGISTRY.get_sample_value(
        "djinn_generations_finished_total", {"model": "smollm2-135m-instruct", "status": status}
    )
    return value or 0


def test_a_reply_streams_its_text_and_saves_it_with_usage_and_timings(user):
    reply = queued_reply(user)
    completed_before = finished_count("completed")

    replies.generate(reply.pk)

    reply.refresh_from_db()
    stream = events(reply)
    deltas, done = stream[:-1], stream[-1]
    assert reply.status == Message.Status.COMPLETED
    assert reply.finish_reason == "length"
    assert reply.completion_tokens == 20
    assert reply.prompt_tokens > 0
    assert reply.ttft_ms is not None and reply.duration_ms is not None
    assert [e["seq"] for e in stream] == list(range(1, len(stream) + 1))
    assert {e["type"] for e in deltas} == {"delta"}
    assert "".join(e["text"] for e in deltas) == reply.content != ""
    assert reply.content_seq == len(deltas)
    assert done["type"] == "done"
    assert done["finish_reason"] == "length"
    assert done["usage"] == {"prompt_tokens": reply.prompt_tokens, "completion_tokens": 20, "cached_tokens": 0}
    assert finished_count("completed") == completed_before + 1


def test_the_task_entry_point_takes_a_string_id(user):
    reply = queued_reply(user)

    generate_reply(str(reply.pk))

    reply.refresh_from_db()
    assert reply.status == Message.Status.COMPLETED


def test_redelivery_of_a_finished_reply_is_a_no_op(user):
    reply = queued_reply(user)
    replies.generate(reply.pk)
    saved = Message.objects.values().get(pk=reply.pk)
    streamed = events(reply)

    replies.generate(reply.pk)

    assert Message.objects.values().get(pk=reply.pk) == saved
    assert events(reply) == streamed


def test_a_reply_another_worker_is_writing_is_left_alone(user):
    conversation = ConversationFactory(owner=user)
    _, reply = add_exchange(conversation, status=Message.Status.RUNNING)
    Message.objects.filter(pk=reply.pk).update(heartbeat_at=timezone.now())

    replies.generate(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.RUNNING
    assert events(reply) == []


def test_an_orphaned_reply_is_marked_failed_after_what_its_dead_worker_streamed(user):
    conversation = ConversationFactory(owner=user)
    _, reply = add_exchange(conversation, status=Message.Status.RUNNING)
    Message.objects.filter(pk=reply.pk).update(content="Partial", heartbeat_at=timezone.now() - timedelta(minutes=5))
    streams.StreamWriter(reply.pk).delta("Partial")

    replies.generate(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.FAILED
    assert reply.error == replies.ORPHANED
    assert reply.content == "Partial"
    assert [(e["seq"], e["type"]) for e in events(reply)] == [(1, "delta"), (2, "error")]
    assert events(reply)[-1]["message"] == replies.ORPHANED


def test_cancel_mid_reply_keeps_the_partial_text(user):
    reply = queued_reply(user, params={"temperature": 0, "max_tokens": 400})

    def cancel_after_first_delta():
        streams.read_events(reply.pk, after=0, block_ms=30_000)
        streams.request_cancel(reply.pk)

    canceller = threading.Thread(target=cancel_after_first_delta)
    canceller.start()
    replies.generate(reply.pk)
    canceller.join()

    reply.refresh_from_db()
    stream = events(reply)
    assert reply.status == Message.Status.CANCELLED
    assert reply.finish_reason == "cancelled"
    assert 0 < reply.completion_tokens < 400
    assert reply.content == "".join(e["text"] for e in stream if e["type"] == "delta")
    assert (stream[-1]["type"], stream[-1]["finish_reason"]) == ("done", "cancelled")


def test_a_reply_cancelled_before_its_worker_starts_ends_empty(user):
    reply = queued_reply(user)
    streams.request_cancel(reply.pk)

    replies.generate(reply.pk)

    reply.refresh_from_db()
    assert (reply.status, reply.content) == (Message.Status.CANCELLED, "")
    assert [e["type"] for e in events(reply)] == ["done"]


def test_a_reply_that_no_longer_fits_the_context_fails_with_a_clear_error(user, llm_model):
    reply = queued_reply(user, content="word " * 40)
    LLMModel.objects.filter(pk=llm_model.pk).update(context_length=32)

    replies.generate(reply.pk)

    reply.refresh_from_db()
    (event,) = events(reply)
    assert reply.status == Message.Status.FAILED
    assert "too long" in reply.error
    assert (event["type"], event["code"]) == ("error", "context_length_exceeded")


def test_a_reply_whose_model_was_disabled_fails(user, llm_model):
    reply = queued_reply(user)
    LLMModel.objects.filter(pk=llm_model.pk).update(enabled=False)

    replies.generate(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.FAILED
    assert events(reply)[-1]["code"] == "model_not_found"


def test_max_tokens_is_capped_by_the_room_left_in_the_context(user):
    reply = queued_reply(user, params={"temperature": 0, "max_tokens": 100_000})

    replies.generate(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.COMPLETED
    assert reply.prompt_tokens + reply.completion_tokens == 512


def test_the_first_completed_reply_asks_for_a_title_and_later_ones_do_not(user, django_capture_on_commit_callbacks):
    reply = queued_reply(user)
    with django_capture_on_commit_callbacks() as first:
        replies.generate(reply.pk)
    Conversation.objects.filter(pk=reply.conversation_id).update(title_is_provisional=False)
    second = services.message_send(
        user=user, conversation_id=reply.conversation_id, parent_id=None, content="More", params=GREEDY
    ).assistant_message
    with django_capture_on_commit_callbacks() as later:
        replies.generate(second.pk)

    assert len(first) == 1
    assert later == []


# The prompt ---------------------------------------------------------------------------------------------


def test_the_prompt_starts_with_the_system_prompt_and_the_custom_instructions():
    owner = UserFactory(custom_instructions="I am a chef.")
    conversation = ConversationFactory(owner=owner, system_prompt="Answer in French.")
    question, reply = add_exchange(conversation, question="Hi", answer="Bonjour")

    chat = prompts.chat_messages(owner=owner, conversation=conversation, path=[question, reply])

    assert chat == [
        {"role": "system", "content": "Answer in French.\n\nI am a chef."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour"},
    ]


def test_the_prompt_has_no_system_message_when_there_is_nothing_to_say():
    owner = UserFactory(custom_instructions="  ")
    conversation = ConversationFactory(owner=owner)
    question, _ = add_exchange(conversation, question="Hi")

    assert prompts.chat_messages(owner=owner, conversation=conversation, path=[question]) == [
        {"role": "user", "content": "Hi"}
    ]


# The stale sweeper and the heartbeat watcher -----------------------------------------------------------------


def test_the_sweeper_fails_silent_and_never_started_replies_only(user, settings):
    conversation = ConversationFactory(owner=user)
    now = timezone.now()
    _, stale = add_exchange(conversation, status=Message.Status.RUNNING)
    _, alive = add_exchange(conversation, status=Message.Status.RUNNING)
    _, forgotten = add_exchange(conversation, status=Message.Status.QUEUED)
    _, waiting = add_exchange(conversation, status=Message.Status.QUEUED)
    _, done = add_exchange(conversation)
    Message.objects.filter(pk=stale.pk).update(heartbeat_at=now - timedelta(seconds=61))
    Message.objects.filter(pk=alive.pk).update(heartbeat_at=now - timedelta(seconds=5))
    Message.objects.filter(pk=forgotten.pk).update(created_at=now - timedelta(minutes=16))

    failed = sweep_stale_generations()

    statuses = dict(Message.objects.filter(role="assistant").values_list("pk", "status"))
    assert failed == 2
    assert statuses == {
        stale.pk: "failed",
        alive.pk: "running",
        forgotten.pk: "failed",
        waiting.pk: "queued",
        done.pk: "completed",
    }
    assert Message.objects.get(pk=stale.pk).error == replies.ORPHANED
    assert Message.objects.get(pk=forgotten.pk).error == replies.NEVER_STARTED
    assert events(stale)[-1]["type"] == "error"
    assert sweep_stale_generations() == 0  # nothing twice


def test_the_watcher_beats_for_its_replies_and_aborts_cancelled_ones(user, llm_model):
    conversation = ConversationFactory(owner=user)
    _, reply = add_exchange(conversation, status=Message.Status.RUNNING)
    Message.objects.filter(pk=reply.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=1))
    engine = runtime.get_engine(llm_model)
    engine.submit([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=400), request_id=str(reply.pk))
    streams.request_cancel(reply.pk)

    replies._Watcher.beat({reply.pk: engine})

    reply.refresh_from_db()
    assert timezone.now() - reply.heartbeat_at < timedelta(seconds=5)
    assert streams.worker_alive(reply.pk)
    outputs = list(engine.stream(str(reply.pk)))
    assert outputs[-1].finish_reason == "abort"
    assert sum(len(o.token_ids) for o in outputs) < 400


# Titles -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        ('"Paris in Winter."', "Paris in Winter"),
        ("Title: **Learning Rust!**\nMore text", "Learning Rust"),
        ("\n\n  'Soup'  ", "Soup"),
        ("# Trip planning…", "Trip planning"),
        ("", ""),
        ("word " * 40, ("word " * 16).strip()),
    ],
)
def test_clean_title(raw, title):
    assert titles.clean_title(raw) == title


def receive_in(group):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)

    async def receive():
        return await asyncio.wait_for(layer.receive(channel), timeout=10)

    return lambda: async_to_sync(receive)()


def test_the_title_task_writes_a_title_and_tells_the_owners_pages(user):
    reply = queued_reply(user)
    replies.generate(reply.pk)
    receive = receive_in(f"user.{user.pk}")

    titles.title_generate(reply.conversation_id)

    conversation = Conversation.objects.get(pk=reply.conversation_id)
    event = receive()
    assert not conversation.title_is_provisional
    assert 0 < len(conversation.title) <= titles.TITLE_MAX_CHARS
    assert event["type"] == "conversation.updated"
    assert event["conversation"]["id"] == str(conversation.pk)
    assert event["conversation"]["title"] == conversation.title


def test_the_title_task_keeps_the_provisional_title_when_the_model_fails(user, llm_model):
    reply = queued_reply(user, content="Plan a trip")
    replies.generate(reply.pk)
    LLMModel.objects.filter(pk=llm_model.pk).update(enabled=False)

    titles.title_generate(reply.conversation_id)

    conversation = Conversation.objects.get(pk=reply.conversation_id)
    assert (conversation.title, conversation.title_is_provisional) == ("Plan a trip", False)


def test_the_title_task_leaves_a_title_the_user_chose(user):
    reply = queued_reply(user)
    replies.generate(reply.pk)
    services.conversation_rename(user=user, conversation_id=reply.conversation_id, title="Mine")

    titles.title_generate(reply.conversation_id)

    assert Conversation.objects.get(pk=reply.conversation_id).title == "Mine"


@pytest.mark.parametrize(
    ("task", "queue"),
    [(generate_reply, "inference"), (generate_title, "inference"), (sweep_stale_generations, "default")],
)
def test_tasks_are_routed_to_their_queues(task, queue):
    route = app.amqp.router.route(task._get_exec_options(), task.name)

    assert route["queue"].name == queue


def test_partial_text_is_saved_while_the_reply_streams(user, monkeypatch):
    reply = queued_reply(user, params={"temperature": 0, "max_tokens": 120})
    monkeypatch.setattr(replies, "PARTIAL_SAVE_INTERVAL_S", 0.001)
    saved = []
    save_partial = replies._Reply.checkpoint

    def save_and_look(self, output, content, seq):
        result = save_partial(self, output, content, seq)
        saved.append(Message.objects.values_list("status", "content", "content_seq").get(pk=reply.pk))
        return result

    monkeypatch.setattr(replies._Reply, "checkpoint", save_and_look)

    replies.generate(reply.pk)

    reply.refresh_from_db()
    stream = events(reply)
    assert len(saved) >= 3  # saved again and again while the reply streamed
    for status, content, seq in saved:
        assert status == Message.Status.RUNNING
        assert content == "".join(e["text"] for e in stream[:seq])
    assert reply.content.startswith(saved[-1][1])


@pytest.mark.parametrize("failing_delta", ["first", "last"])
@pytest.mark.timeout(120)  # a reply that never ends fails here rather than hanging the suite
def test_a_stream_that_cannot_be_written_fails_the_reply_and_the_worker_goes_on(user, monkeypatch, failing_delta):
    # Fault injection at the Redis boundary: the writer reports that the appends of a batch failed.
    params = {"temperature": 0, "max_tokens": 12}
    counting = queued_reply(user, params=params)
    replies.generate(counting.pk)
    deltas = sum(e["type"] == "delta" for e in events(counting))
    fail_at = 1 if failing_delta == "first" else deltas
    delta = stream_batching.BatchedStreamWriter.delta
    calls = []

    def failing(self, text, **kwargs):
        calls.append(text)
        if len(calls) == fail_at:
            raise stream_batching.StreamWriteFailed("Redis went away")
        return delta(self, text, **kwargs)

    monkeypatch.setattr(stream_batching.BatchedStreamWriter, "delta", failing)
    reply = queued_reply(user, params=params)

    with pytest.raises(stream_batching.StreamWriteFailed):
        replies.generate(reply.pk)

    reply.refresh_from_db()
    assert (reply.status, reply.error) == (Message.Status.FAILED, replies.ENGINE_FAILED)
    assert events(reply)[-1]["type"] == "error"
    monkeypatch.setattr(stream_batching.BatchedStreamWriter, "delta", delta)
    after = queued_reply(user, params=params)
    replies.generate(after.pk)
    after.refresh_from_db()
    assert after.status == Message.Status.COMPLETED


@pytest.mark.timeout(120)
def test_a_failing_save_of_the_partial_text_stops_the_generation_and_ends_its_stream_last(user, monkeypatch):
    monkeypatch.setattr(replies, "PARTIAL_SAVE_INTERVAL_S", 0.01)

    def broken_save(self, output, content, seq):
        raise DatabaseError("connection lost")

    monkeypatch.setattr(replies._Reply, "checkpoint", broken_save)
    reply = queued_reply(user, params={"temperature": 0, "max_tokens": 2000})

    with pytest.raises(DatabaseError):
        replies.generate(reply.pk)

    reply.refresh_from_db()
    stream = events(reply)
    engine = runtime.get_engine(LLMModel.objects.get(name=reply.model))
    assert reply.status == Message.Status.FAILED
    assert stream[-1]["type"] == "error"
    assert [e["seq"] for e in stream] == list(range(1, len(stream) + 1))
    deadline = time.monotonic() + 10
    while engine.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.stats()["running"] == 0  # aborted, not left to write 2000 tokens for nobody
    assert reply.completion_tokens < 2000
