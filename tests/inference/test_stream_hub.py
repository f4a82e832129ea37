"""The web process's multiplexed stream reader (inference.stream_hub) against real Redis streams written
with StreamWriter: each watch gets exactly its events after its seq, new watches join a read in flight."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from inference import stream_hub, streams
from inference.redis import get_redis


@pytest.fixture
def gen_ids():
    ids = [str(uuid.uuid4()) for _ in range(3)]
    yield ids
    get_redis().delete(*(streams.stream_key(generation_id) for generation_id in ids))


async def take(watch, count, timeout_s=5.0):
    events = []
    deadline = time.monotonic() + timeout_s
    while len(events) < count and time.monotonic() < deadline:
        events += await watch.next(deadline - time.monotonic())
    return events


def test_a_watch_gets_the_events_after_its_seq_then_new_ones_as_they_come(gen_ids):
    writer = streams.StreamWriter(gen_ids[0])
    writer.delta("a")
    writer.delta("b")

    async def scenario():
        async with stream_hub.watch({gen_ids[0]: 1}) as watch:
            first = await take(watch, 1)
            asyncio.get_running_loop().call_later(0.1, writer.delta, "c")
            second = await take(watch, 1)
            quiet = await watch.next(0.05)
        return first, second, quiet

    first, second, quiet = asyncio.run(scenario())

    assert [(e["seq"], e["text"]) for e in first] == [(2, "b")]
    assert [(e["seq"], e["text"]) for e in second] == [(3, "c")]
    assert quiet == []


def test_one_watch_follows_several_streams_and_each_watch_its_own_position(gen_ids):
    first, second = streams.StreamWriter(gen_ids[0]), streams.StreamWriter(gen_ids[1])
    first.delta("1a")
    first.delta("1b")

    async def scenario():
        async with (
            stream_hub.watch({gen_ids[0]: 0, gen_ids[1]: 0}) as both,
            stream_hub.watch({gen_ids[0]: 1}) as late,
        ):
            second.delta("2a")
            seen_by_both = await take(both, 3)
            seen_late = await take(late, 1)
        return seen_by_both, seen_late

    seen_by_both, seen_late = asyncio.run(scenario())

    assert sorted((e["id"], e["seq"]) for e in seen_by_both) == sorted(
        [(gen_ids[0], 1), (gen_ids[0], 2), (gen_ids[1], 1)]
    )
    assert [(e["id"], e["seq"]) for e in seen_late] == [(gen_ids[0], 2)]


def test_a_watch_opened_while_the_reader_blocks_is_served_at_once(gen_ids):
    async def scenario():
        async with stream_hub.watch({gen_ids[0]: 0}):
            await asyncio.sleep(0.1)  # the reader is now blocked on the first stream only
            streams.StreamWriter(gen_ids[1]).delta("x")
            started = time.monotonic()
            async with stream_hub.watch({gen_ids[1]: 0}) as joined:
                events = await joined.next(5)
            return events, time.monotonic() - started

    events, waited = asyncio.run(scenario())

    assert [e["text"] for e in events] == ["x"]
    assert waited < 1  # not the reader's block timeout


def test_a_dropped_stream_is_no_longer_delivered(gen_ids):
    writer = streams.StreamWriter(gen_ids[0])

    async def scenario():
        async with stream_hub.watch({gen_ids[0]: 0, gen_ids[1]: 0}) as watch:
            watch.drop(gen_ids[0])
            writer.delta("ignored")
            streams.StreamWriter(gen_ids[1]).delta("kept")
            return await take(watch, 1)

    assert [e["text"] for e in asyncio.run(scenario())] == ["kept"]


def test_a_negative_position_is_refused(gen_ids):
    async def scenario():
        async with stream_hub.watch({gen_ids[0]: -1}):
            pass

    with pytest.raises(ValueError):
        asyncio.run(scenario())
