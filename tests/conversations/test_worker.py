"""End to end through a real Celery worker (``-P threads``) serving the tiny model."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from config.celery import app
from conversations import selectors, services
from conversations.errors import NotFound
from conversations.models import Conversation, Message
from conversations.tasks import generate_reply
from inference import streams
from inference.redis import get_redis
from tests.conversations.conftest import wait_for
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker", "llm_model")]


def send(user, content, **params):
    params = {"temperature": 0, "max_tokens": 30} | params
    return services.message_send(user=user, conversation_id=None, parent_id=None, content=content, params=params)


def read_until_done(generation_id, *, after=0, timeout=60.0):
    """Every event after ``after`` up to the terminal one, read as a consumer reads them."""
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while not events or events[-1]["type"] not in streams.TERMINAL_TYPES:
        assert time.monotonic() < deadline, f"no terminal event after {events[-3:]}"
        events += streams.read_events(generation_id, after=events[-1]["seq"] if events else after, block_ms=1000)
    return events


def worker_idle(worker_name):
    """The inference queue is empty and the worker holds no task."""
    if get_redis().llen("inference"):
        return False
    active = app.control.inspect([worker_name], timeout=1).active() or {}
    return active.get(worker_name) == []


def test_concurrent_replies_of_several_users_each_stream_only_their_own_events():
    users = UserFactory.create_batch(4)
    turns = [send(user, f"Hello, I am user number {i}", max_tokens=60) for i, user in enumerate(users)]

    for user, turn in zip(users, turns, strict=True):
        generation = selectors.generation_get(user=user, generation_id=turn.assistant_message.pk)
        events = read_until_done(generation.pk)
        generation.refresh_from_db()
        assert {event["id"] for event in events} == {str(generation.pk)}
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "done"
        assert generation.status == Message.Status.COMPLETED
        assert generation.content == "".join(e["text"] for e in events if e["type"] == "delta")
        assert generation.completion_tokens == 60
    for user, turn in zip(users, turns[1:] + turns[:1], strict=True):
        with pytest.raises(NotFound):
            selectors.generation_get(user=user, generation_id=turn.assistant_message.pk)


def test_a_redelivered_finished_reply_changes_nothing(celery_worker):
    user = UserFactory()
    reply = send(user, "Hello there").assistant_message
    events = read_until_done(reply.pk)
    wait_for(lambda: worker_idle(celery_worker))  # the title task too
    saved = Message.objects.values().get(pk=reply.pk)

    generate_reply.delay(str(reply.pk))
    wait_for(lambda: worker_idle(celery_worker))
    generate_reply(str(reply.pk))

    assert Message.objects.values().get(pk=reply.pk) == saved
    assert streams.read_events(reply.pk, after=0) == events


def test_cancel_stops_the_reply_and_keeps_its_partial_text():
    user = UserFactory()
    reply = send(user, "Tell me a long story", max_tokens=400).assistant_message
    first = streams.read_events(reply.pk, after=0, block_ms=30_000)

    services.generation_cancel(user=user, message_id=reply.pk)

    events = first + read_until_done(reply.pk, after=first[-1]["seq"])
    reply.refresh_from_db()
    assert (events[-1]["type"], events[-1]["finish_reason"]) == ("done", "cancelled")
    assert reply.status == Message.Status.CANCELLED
    assert 0 < reply.completion_tokens < 400
    assert reply.content == "".join(e["text"] for e in events if e["type"] == "delta")


def test_the_first_reply_gets_a_generated_title_announced_to_the_owner():
    user = UserFactory()
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(f"user.{user.pk}", channel)

    turn = send(user, "Plan a weekend in Rome")
    read_until_done(turn.assistant_message.pk)
    conversation = wait_for(
        lambda: Conversation.objects.filter(pk=turn.conversation.pk, title_is_provisional=False).first()
    )
    event = async_to_sync(asyncio.wait_for)(layer.receive(channel), timeout=10)

    assert event["type"] == "conversation.updated"
    assert event["conversation"]["title"] == conversation.title
