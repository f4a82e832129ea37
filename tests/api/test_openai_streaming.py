"""The reader behind /v1 responses (conversations.openai_api.streaming), against real Redis streams written
by hand: merged choices, giving up on a request no worker serves, cancelling what the reader leaves."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import aclosing

import pytest

from conversations.openai_api.streaming import GENERATION_LOST, choice_events
from inference import streams
from inference.redis import get_redis


@pytest.fixture
def short_timeouts(settings):
    settings.DJINN_GENERATION_QUEUED_TIMEOUT_S = 1
    settings.DJINN_GENERATION_STALE_AFTER_S = 1


def read_all(generation_ids):
    async def read():
        seen = []
        async with aclosing(choice_events(generation_ids, user_id=0)) as batches:
            async for batch in batches:
                seen += batch
        return seen

    return asyncio.run(read())


def read_until_choice_ends(generation_ids, index):
    """Read until choice ``index`` has ended, then leave."""

    async def read():
        async with aclosing(choice_events(generation_ids, user_id=0)) as batches:
            async for batch in batches:
                if any(i == index and event["type"] in streams.TERMINAL_TYPES for i, event in batch):
                    return

    asyncio.run(read())


def test_the_choices_streams_are_read_each_in_order_until_every_one_has_ended():
    first, second = uuid.uuid4(), uuid.uuid4()
    a, b = streams.StreamWriter(first), streams.StreamWriter(second)
    a.delta("Hel")
    b.delta("Bon")
    a.delta("lo")
    b.error(message="The model failed.")
    a.done(finish_reason="stop", usage={"prompt_tokens": 3, "completion_tokens": 2, "cached_tokens": 0})

    events = read_all([first, second])

    assert [(i, e["seq"], e["type"]) for i, e in events if i == 0] == [(0, 1, "delta"), (0, 2, "delta"), (0, 3, "done")]
    assert [(i, e["seq"], e["type"]) for i, e in events if i == 1] == [(1, 1, "delta"), (1, 2, "error")]
    assert not streams.cancel_requested(first)
    assert not streams.cancel_requested(second)


def test_a_reader_that_leaves_early_cancels_the_generations_still_running():
    finished, running = uuid.uuid4(), uuid.uuid4()
    streams.StreamWriter(finished).done(finish_reason="length", usage=None)
    streams.StreamWriter(running).delta("Still going")

    read_until_choice_ends([finished, running], 0)

    assert streams.cancel_requested(running)
    assert not streams.cancel_requested(finished)


@pytest.mark.usefixtures("short_timeouts")
def test_a_request_no_worker_takes_is_given_up_and_cancelled():
    generation = uuid.uuid4()

    (last,) = [event for _index, event in read_all([generation])]

    assert (last["type"], last["code"]) == ("error", GENERATION_LOST)
    assert "No worker took" in last["message"]
    assert streams.cancel_requested(generation)


@pytest.mark.usefixtures("short_timeouts")
def test_a_generation_whose_worker_stopped_heart_beating_is_given_up():
    generation = uuid.uuid4()
    streams.heartbeat(generation, ttl_s=1)
    streams.StreamWriter(generation).delta("Half a rep")

    *deltas, last = [event for _index, event in read_all([generation])]

    assert [delta["text"] for delta in deltas] == ["Half a rep"]
    assert (last["type"], last["code"]) == ("error", GENERATION_LOST)
    assert "stopped" in last["message"]


def test_the_reader_holds_a_lease_on_each_choice_while_it_reads():
    generation = uuid.uuid4()
    streams.heartbeat(generation, ttl_s=30)

    async def read():
        async with aclosing(choice_events([generation], user_id=0)) as batches:
            await anext(batches)  # a quiet read
            leased = bool(get_redis().exists(streams.lease_key(generation)))
            streams.StreamWriter(generation).done(finish_reason="stop", usage=None)
            return leased, [batch async for batch in batches]

    leased, _rest = asyncio.run(read())

    assert leased


@pytest.mark.usefixtures("short_timeouts")
def test_a_queued_request_whose_worker_heart_beats_is_waited_for():
    generation = uuid.uuid4()
    streams.heartbeat(generation, ttl_s=30)  # a worker took it and is loading the model, say

    async def read():
        async with aclosing(choice_events([generation], user_id=0)) as batches:
            first = await anext(batches)  # a quiet read, past the queue timeout
            streams.StreamWriter(generation).done(finish_reason="stop", usage=None)
            return first, [batch async for batch in batches]

    quiet, rest = asyncio.run(read())

    assert quiet == []
    assert [event["type"] for batch in rest for _index, event in batch] == ["done"]
