"""The inference worker's generation pump (inference.pump) with the real tiny engine and real Redis: a step's
deltas in one round trip, idempotent appends, cancel flags, reader leases, save hooks, and Redis faults made
by a real TCP proxy that cuts and refuses connections."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch
from django.conf import settings

from chaos.proxy import FaultyProxy
from inference import pump as pump_module
from inference import streams
from inference.engine import Engine, SamplingParams
from inference.pump import GenerationPump, Snapshot
from inference.redis import get_redis

LONG = SamplingParams(temperature=0.0, max_tokens=400, ignore_eos=True)


@pytest.fixture(scope="module")
def engine(chat_model_path: Path) -> Iterator[Engine]:
    with Engine(chat_model_path, device="cpu", dtype=torch.float32, num_kv_blocks=128, max_num_seqs=8) as eng:
        yield eng


@pytest.fixture
def gen_ids() -> Iterator[list[str]]:
    ids = [str(uuid.uuid4()) for _ in range(4)]
    yield ids
    keys = [f"{streams.stream_key(g)}{suffix}" for g in ids for suffix in ("", ":cancel", ":alive", ":reader")]
    get_redis().delete(*keys)


@pytest.fixture
def fast_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pump_module, "TICK_S", 0.05)


def run(pump: GenerationPump, engine: Engine, generation_id: str, params: SamplingParams, **track: object):
    tracked = pump.track(generation_id, **track)
    tracked.attach(engine)
    engine.submit([5, 6, 7, 8], params, request_id=generation_id, sink=pump.on_step)
    return tracked


def stream_text(generation_id: str) -> str:
    return "".join(e["text"] for e in streams.read_events(generation_id, after=0) if e["type"] == "delta")


def test_every_delta_reaches_its_stream_in_order_with_one_round_trip_per_step(engine, gen_ids, monkeypatch):
    pump = GenerationPump()
    calls = []
    append = streams.append

    def counting(client, batches):
        calls.append(sorted(batches))
        return append(client, batches)

    monkeypatch.setattr(streams, "append", counting)
    params = SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True)
    with engine._wakeup:  # the four start in the same step
        tracked = [run(pump, engine, g, params) for g in gen_ids]
    for t in tracked:
        assert t.wait(30)
        pump.untrack(t)

    for t in tracked:
        events = streams.read_events(t.id, after=0)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert stream_text(t.id) == t.text != ""
        assert t.final is not None and t.final.finish_reason == "length"
        assert t.written_seq == t.seq == len(events)
    # Each step makes a token for each of the four, and each append carries whole steps: all four at once,
    # at most one append per step (fewer when steps came faster than Redis answered).
    assert all(call == sorted(gen_ids) for call in calls)
    assert len(calls) <= 30


def test_appends_are_idempotent_and_report_another_writers_event_as_a_conflict(gen_ids):
    client = get_redis()
    entries = [
        streams.Entry(seq, streams.event_json(gen_ids[0], seq, "delta", text=t)) for seq, t in [(1, "a"), (2, "b")]
    ]

    first = streams.append(client, {gen_ids[0]: entries})[gen_ids[0]]
    again = streams.append(client, {gen_ids[0]: entries})[gen_ids[0]]  # a retry after a lost reply
    streams.StreamWriter(gen_ids[1]).error(message="Worker stopped.")  # the sweeper ended this one
    other = streams.append(client, {gen_ids[1]: entries[:1]})[gen_ids[1]]

    assert (first.conflict, again.conflict, other.conflict) == (False, False, True)
    assert [e["text"] for e in streams.read_events(gen_ids[0], after=0)] == ["a", "b"]
    assert [e["type"] for e in streams.read_events(gen_ids[1], after=0)] == ["error"]


def test_a_cancel_flag_stops_the_generation_within_a_step(engine, gen_ids):
    pump = GenerationPump()
    tracked = run(pump, engine, gen_ids[0], LONG)
    while not tracked.parts:
        time.sleep(0.005)

    streams.request_cancel(gen_ids[0])

    assert tracked.wait(10)
    pump.untrack(tracked)
    assert tracked.cancel_seen
    assert tracked.final.finish_reason == "abort"
    assert tracked.final.usage.completion_tokens < 400
    assert stream_text(gen_ids[0]) == tracked.text


def test_a_generation_whose_reader_is_gone_is_stopped_by_the_keeper(engine, gen_ids, fast_ticks):
    pump = GenerationPump()  # and no reader holds a lease on it

    tracked = run(pump, engine, gen_ids[0], LONG, leased=True)

    assert tracked.wait(10)
    pump.untrack(tracked)
    assert tracked.reader_gone and not tracked.cancel_seen
    assert tracked.final.finish_reason == "abort"
    assert 0 < tracked.final.usage.completion_tokens < 400


def test_the_keeper_beats_and_saves_partial_text_never_ahead_of_the_stream(engine, gen_ids, fast_ticks):
    pump = GenerationPump()
    saved: list[Snapshot] = []

    def save(snapshots: list[Snapshot]) -> set[str]:
        for snapshot in snapshots:
            events = streams.read_events(snapshot.generation_id, after=0)
            assert snapshot.content == "".join(e["text"] for e in events[: snapshot.seq])
        saved.extend(snapshots)
        return set()

    waiting = pump.track(gen_ids[1], save=save)  # tracked, its model still loading: beats all the same
    tracked = run(pump, engine, gen_ids[0], SamplingParams(temperature=0.0, max_tokens=150, ignore_eos=True), save=save)
    assert tracked.wait(30)
    pump.untrack(tracked)
    pump.untrack(waiting)

    mine = [s for s in saved if s.generation_id == gen_ids[0]]
    assert len({s.seq for s in mine if s.changed}) >= 2  # saved again and again as it grew
    assert any(s.generation_id == gen_ids[1] for s in saved)
    assert streams.worker_alive(gen_ids[1])


def test_a_generation_its_save_hook_says_is_gone_is_stopped(engine, gen_ids, fast_ticks):
    pump = GenerationPump()

    tracked = run(pump, engine, gen_ids[0], LONG, save=lambda snapshots: {s.generation_id for s in snapshots})

    assert tracked.wait(10)
    pump.untrack(tracked)
    assert tracked.taken_away
    assert engine_idle(engine)


def test_a_failing_save_hook_does_not_stop_the_generation(engine, gen_ids, fast_ticks):
    from django.db import OperationalError

    pump = GenerationPump()
    failures = []

    def broken(snapshots: list[Snapshot]) -> set[str]:
        failures.append(len(snapshots))
        raise OperationalError("the database went away")

    params = SamplingParams(temperature=0.0, max_tokens=150, ignore_eos=True)
    tracked = run(pump, engine, gen_ids[0], params, save=broken)

    assert tracked.wait(30)
    pump.untrack(tracked)
    assert failures
    assert tracked.final.finish_reason == "length"
    assert stream_text(gen_ids[0]) == tracked.text


def engine_idle(engine: Engine) -> bool:
    deadline = time.monotonic() + 10
    while engine.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    return engine.stats()["running"] == 0


@pytest.fixture
def redis_proxy() -> Iterator[FaultyProxy]:
    url = redis.connection.parse_url(settings.REDIS_URL)
    proxy = FaultyProxy((url.get("host", "127.0.0.1"), url.get("port", 6379))).start()
    yield proxy
    proxy.stop()


def proxied_client(proxy: FaultyProxy) -> redis.Redis:
    db = redis.connection.parse_url(settings.REDIS_URL).get("db", 0)
    return redis.Redis(host="127.0.0.1", port=proxy.port, db=db, decode_responses=True, socket_timeout=5)


def test_redis_away_for_a_moment_loses_nothing(engine, gen_ids, redis_proxy):
    pump = GenerationPump(proxied_client(redis_proxy))
    pump.redis_retry_s = 20
    params = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)
    tracked = run(pump, engine, gen_ids[0], params)
    while len(tracked.parts) < 5:
        time.sleep(0.005)

    redis_proxy.refuse(True)
    time.sleep(1.0)
    redis_proxy.refuse(False)

    assert tracked.wait(30)
    pump.untrack(tracked)
    events = streams.read_events(gen_ids[0], after=0)
    assert tracked.failure is None
    assert tracked.final.finish_reason == "length"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
    assert stream_text(gen_ids[0]) == tracked.text
    assert redis_proxy.cuts >= 1


def test_redis_away_for_longer_than_the_retries_fails_the_generation_and_keeps_its_text(engine, gen_ids, redis_proxy):
    pump = GenerationPump(proxied_client(redis_proxy))
    pump.redis_retry_s = 1
    tracked = run(pump, engine, gen_ids[0], LONG)
    while len(tracked.parts) < 5:
        time.sleep(0.005)

    redis_proxy.refuse(True)
    ended = tracked.wait(15)
    redis_proxy.refuse(False)

    pump.untrack(tracked)
    assert ended
    assert isinstance(tracked.failure, pump_module.StreamLost)
    assert tracked.text.startswith(stream_text(gen_ids[0]))  # all it made is kept, the stream has a prefix
    assert engine_idle(engine)


def test_the_pump_goes_on_serving_other_generations_after_one_failed(engine, gen_ids, redis_proxy):
    pump = GenerationPump(proxied_client(redis_proxy))
    pump.redis_retry_s = 0.5
    first = run(pump, engine, gen_ids[0], LONG)
    while not first.parts:
        time.sleep(0.005)
    redis_proxy.refuse(True)
    assert first.wait(15)
    redis_proxy.refuse(False)

    second = run(pump, engine, gen_ids[1], SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True))

    assert second.wait(30)
    assert second.failure is None
    assert stream_text(gen_ids[1]) == second.text


def test_the_engine_thread_never_waits_for_redis(engine, gen_ids, redis_proxy, monkeypatch):
    pump = GenerationPump(proxied_client(redis_proxy))
    redis_proxy.delay(0.2)  # every round trip takes 400 ms
    appends = []
    append = streams.append

    def counting(client, batches):
        appends.append(sum(len(entries) for entries in batches.values()))
        return append(client, batches)

    monkeypatch.setattr(streams, "append", counting)
    params = SamplingParams(temperature=0.0, max_tokens=60, ignore_eos=True)

    tracked = run(pump, engine, gen_ids[0], params)

    assert tracked.wait(60)
    pump.untrack(tracked)
    # The engine went on stepping while each slow append was in flight: the writer took the steps that had
    # piled up meanwhile in one append, instead of one append per step.
    assert len(appends) < 60 / 4
    assert max(appends) > 4
    assert stream_text(gen_ids[0]) == tracked.text
