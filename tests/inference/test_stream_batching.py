"""The inference worker's batched stream writes (inference.stream_batching) against real Redis: the same
stream contract as StreamWriter, several generations per transaction, cancel flags seen by the writer
thread."""

from __future__ import annotations

import threading
import uuid

import pytest

from inference import stream_batching, streams
from inference.redis import get_redis


@pytest.fixture
def gen_ids():
    ids = [str(uuid.uuid4()) for _ in range(3)]
    yield ids
    for generation_id in ids:
        get_redis().delete(
            streams.stream_key(generation_id),
            streams.cancel_key(generation_id),
            f"djinn:gen:{generation_id}:beside",
        )


def test_deltas_and_the_terminal_event_keep_the_stream_contract(gen_ids):
    writer = stream_batching.BatchedStreamWriter(gen_ids[0])

    seqs = [writer.delta("Hel"), writer.delta("lo"), writer.done(finish_reason="stop", usage={"prompt_tokens": 3})]
    writer.close()

    events = streams.read_events(gen_ids[0], after=0)
    assert seqs == [1, 2, 3]
    assert [(e["seq"], e["type"], e["text"]) for e in events] == [
        (1, "delta", "Hel"),
        (2, "delta", "lo"),
        (3, "done", ""),
    ]
    assert events[0] == {
        "id": gen_ids[0],
        "seq": 1,
        "type": "delta",
        "text": "Hel",
        "finish_reason": None,
        "usage": None,
        "message": None,
        "code": None,
    }
    assert events[2]["usage"] == {"prompt_tokens": 3}


def test_a_flushed_writer_has_every_delta_in_its_stream_with_its_ttl(gen_ids):
    writer = stream_batching.BatchedStreamWriter(gen_ids[0])
    for piece in "abcde":
        writer.delta(piece)

    writer.flush()

    assert "".join(e["text"] for e in streams.read_events(gen_ids[0], after=0)) == "abcde"
    assert streams.STREAM_TTL_S - 5 < get_redis().ttl(streams.stream_key(gen_ids[0])) <= streams.STREAM_TTL_S
    writer.close()


def test_generations_written_from_many_threads_each_get_their_own_dense_stream(gen_ids):
    writers = [stream_batching.BatchedStreamWriter(generation_id) for generation_id in gen_ids]

    def write(writer, tag):
        for i in range(50):
            writer.delta(f"{tag}{i} ")
        writer.done(finish_reason="length", usage=None)
        writer.close()

    threads = [threading.Thread(target=write, args=(w, tag)) for w, tag in zip(writers, "xyz", strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    for generation_id, tag in zip(gen_ids, "xyz", strict=True):
        events = streams.read_events(generation_id, after=0)
        assert [e["seq"] for e in events] == list(range(1, 52))
        assert "".join(e["text"] for e in events) == "".join(f"{tag}{i} " for i in range(50))
        assert events[-1]["type"] == "done"


def test_the_writer_thread_sees_the_cancel_flag_and_calls_on_cancel_once(gen_ids):
    cancelled = []
    writer = stream_batching.BatchedStreamWriter(gen_ids[0], on_cancel=lambda: cancelled.append(True))
    writer.delta("a")
    writer.flush()
    before = writer.cancel_requested

    streams.request_cancel(gen_ids[0])
    writer.delta("b")
    writer.delta("c")
    writer.flush()

    assert (before, writer.cancel_requested, cancelled) == (False, True, [True])
    writer.close()


def test_a_step_with_no_text_still_has_the_cancel_flag_read_and_appends_nothing(gen_ids):
    cancelled = []
    writer = stream_batching.BatchedStreamWriter(gen_ids[0], on_cancel=lambda: cancelled.append(True))
    writer.delta("a")
    streams.request_cancel(gen_ids[0])

    writer.check_cancel()
    writer.flush()

    assert cancelled == [True]
    assert [e["text"] for e in streams.read_events(gen_ids[0], after=0)] == ["a"]
    assert writer.delta("b") == 2  # the check took no seq
    writer.close()


def test_a_value_beside_a_delta_is_in_its_hash_under_the_deltas_seq(gen_ids):
    writer = stream_batching.BatchedStreamWriter(gen_ids[0])
    key = f"djinn:gen:{gen_ids[0]}:beside"
    writer.delta("a")

    seq = writer.delta("b", beside=(key, "[1, 2]"))
    writer.flush()

    assert get_redis().hgetall(key) == {str(seq): "[1, 2]"}
    assert 0 < get_redis().ttl(key) <= streams.STREAM_TTL_S
    writer.close()


def test_a_writer_overtaken_by_another_goes_on_after_it(gen_ids):
    worker = stream_batching.BatchedStreamWriter(gen_ids[0])
    worker.delta("a")
    worker.flush()
    streams.StreamWriter(gen_ids[0]).error(message="Worker stopped.")  # the sweeper, say
    worker.delta("b")  # collides with the sweeper's seq 2
    worker.flush()

    seq = worker.delta("c")
    worker.flush()

    events = streams.read_events(gen_ids[0], after=0)
    assert [(e["seq"], e["type"]) for e in events] == [(1, "delta"), (2, "error"), (3, "delta")]
    assert seq == 3
    worker.close()
