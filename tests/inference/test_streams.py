from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from inference import streams
from inference.redis import get_redis


@pytest.fixture
def gen_id():
    generation_id = str(uuid.uuid4())
    yield generation_id
    get_redis().delete(
        streams.stream_key(generation_id), f"djinn:gen:{generation_id}:cancel", f"djinn:gen:{generation_id}:alive"
    )


def test_writer_numbers_events_from_one_and_reader_resumes_after_any_seq(gen_id):
    writer = streams.StreamWriter(gen_id)

    seqs = [writer.delta("Hel"), writer.delta("lo"), writer.done(finish_reason="stop", usage={"prompt_tokens": 3})]

    assert seqs == [1, 2, 3]
    assert [e["seq"] for e in streams.read_events(gen_id, after=0)] == [1, 2, 3]
    assert [e["seq"] for e in streams.read_events(gen_id, after=1)] == [2, 3]
    assert streams.read_events(gen_id, after=3) == []


def test_events_carry_the_generation_id_type_and_payload(gen_id):
    writer = streams.StreamWriter(gen_id)
    writer.delta("Hi")
    writer.done(finish_reason="length", usage={"prompt_tokens": 3, "completion_tokens": 1})

    delta, done = streams.read_events(gen_id, after=0)

    assert delta == {
        "id": gen_id,
        "seq": 1,
        "type": "delta",
        "text": "Hi",
        "finish_reason": None,
        "usage": None,
        "message": None,
        "code": None,
    }
    assert done["type"] == "done"
    assert done["finish_reason"] == "length"
    assert done["usage"] == {"prompt_tokens": 3, "completion_tokens": 1}


def test_error_event_has_message_and_code(gen_id):
    streams.StreamWriter(gen_id).error(message="The model failed.")

    (event,) = streams.read_events(gen_id, after=0)

    assert event["type"] == "error"
    assert event["message"] == "The model failed."
    assert event["code"] == "generation_failed"


def test_unknown_stream_reads_as_empty(gen_id):
    assert streams.read_events(gen_id, after=0) == []


def test_a_new_writer_continues_after_the_existing_events(gen_id):
    first = streams.StreamWriter(gen_id)
    first.delta("a")
    first.delta("b")

    seq = streams.StreamWriter(gen_id).error(message="Worker stopped.")

    assert seq == 3
    assert [e["type"] for e in streams.read_events(gen_id, after=0)] == ["delta", "delta", "error"]


def test_a_writer_that_was_overtaken_appends_after_the_other_writer(gen_id):
    worker = streams.StreamWriter(gen_id)
    worker.delta("a")
    streams.StreamWriter(gen_id).error(message="Worker stopped.")

    seq = worker.delta("b")

    assert seq == 3
    assert [e["seq"] for e in streams.read_events(gen_id, after=0)] == [1, 2, 3]


def test_stream_expires_an_hour_after_its_last_write(gen_id):
    streams.StreamWriter(gen_id).delta("a")

    ttl = get_redis().ttl(streams.stream_key(gen_id))

    assert streams.STREAM_TTL_S - 5 < ttl <= streams.STREAM_TTL_S == 3600


def test_blocking_read_returns_as_soon_as_an_event_arrives(gen_id):
    writer = streams.StreamWriter(gen_id)
    threading.Timer(0.1, writer.delta, args=("late",)).start()
    started = time.monotonic()

    events = streams.read_events(gen_id, after=0, block_ms=5000)

    assert [e["text"] for e in events] == ["late"]
    assert time.monotonic() - started < 2


def test_blocking_read_times_out_empty(gen_id):
    assert streams.read_events(gen_id, after=0, block_ms=50) == []


def test_negative_after_is_refused(gen_id):
    with pytest.raises(ValueError):
        streams.read_events(gen_id, after=-1)


def test_async_read_resumes_and_blocks_without_holding_the_loop(gen_id):
    writer = streams.StreamWriter(gen_id)
    writer.delta("a")

    async def scenario():
        first = await streams.aread_events(gen_id, after=0)
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        asyncio.get_running_loop().call_later(0.2, writer.delta, "b")
        second = await streams.aread_events(gen_id, after=1, block_ms=5000)
        ticker.cancel()
        return first, second, ticks

    first, second, ticks = asyncio.run(scenario())

    assert [e["text"] for e in first] == ["a"]
    assert [e["text"] for e in second] == ["b"]
    assert ticks >= 5  # the loop kept running while the read waited


def test_cancel_flag_is_per_generation(gen_id):
    other = str(uuid.uuid4())

    streams.request_cancel(gen_id)

    assert streams.cancel_requested(gen_id)
    assert not streams.cancel_requested(other)


def test_heartbeat_says_alive_until_its_ttl_runs_out(gen_id):
    assert not streams.worker_alive(gen_id)

    streams.heartbeat(gen_id, ttl_s=1)

    assert streams.worker_alive(gen_id)
    time.sleep(1.1)
    assert not streams.worker_alive(gen_id)


def test_each_append_reports_whether_cancel_was_requested(gen_id):
    writer = streams.StreamWriter(gen_id)
    writer.delta("a")
    before = writer.cancel_requested

    streams.request_cancel(gen_id)
    writer.delta("b")

    assert (before, writer.cancel_requested) == (False, True)


def test_a_quiet_stream_blocks_longer_than_redis_default_socket_timeout_without_error(gen_id):
    # redis-py's clients time out after 5 s by default; readers block for longer than that.
    events = asyncio.run(streams.aread_events(gen_id, after=0, block_ms=6_000))

    assert events == []
