"""The inference worker's generation pump: one per process, between the engine and Redis / PostgreSQL.

A generation (a chat reply, an API completion) is *tracked* by the pump from the moment its task claims it
until the task is done with it. While it is tracked:

* The engine hands the pump every output of a step in one call (``Engine.submit(sink=pump.on_step)``); the
  pump's writer thread appends all of that step's deltas, of every generation, to their streams in one round
  trip (``streams.append``, which reads the cancel flags in the same trip), and aborts a cancelled
  generation in the engine at once. The engine thread never waits for the network.
* The keeper thread, every TICK_S, sends the heartbeats of all of them and reads their cancel flags and
  reader leases in one round trip, then saves their partial text and heartbeats to PostgreSQL through each
  generation's save hook (one call per hook for all its generations: one UPDATE for every reply), and stops
  those the hook says are no longer theirs (deleted, or failed by the sweeper). Heartbeats start at the
  claim, so a generation waiting for its model to load is not taken for dead.

The task's thread only tracks, submits and waits (:meth:`Tracked.wait`); then it appends the terminal event
itself (:meth:`GenerationPump.append_terminal`), which comes after every delta, and saves the end.

Faults: a Redis error while appending is retried (the same entries again: appends are idempotent) with a
backoff, for up to DJINN_REDIS_RETRY_S; past that, the generations whose deltas could not be written end
with ``failure`` set, aborted in the engine. A keeper tick that fails (Redis or PostgreSQL) is logged and
done again at the next tick.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError

from inference import streams
from inference.engine import Engine, RequestOutput
from inference.faults import backoff_s, close_connections, retrying_redis
from inference.redis import get_redis

logger = logging.getLogger(__name__)

TICK_S = 1.0  # heartbeats, partial saves, cancel flags and leases of generations that make no output
LEASE_MISSES = 2  # a reader's lease found lapsed at this many ticks in a row: the reader is gone


class StreamLost(Exception):
    """The generation's deltas could not be appended to its stream for DJINN_REDIS_RETRY_S."""


@dataclass(frozen=True)
class Snapshot:
    """What a save hook writes for one generation: its text so far, as far as its stream holds it."""

    generation_id: str
    content: str
    seq: int  # the seq of the last delta in ``content``
    completion_tokens: int
    changed: bool  # content has grown since the last successful save


# Saves the partial replies (and the worker's heartbeat) of these generations; returns the ids of those that
# are no longer this worker's to write (deleted, or ended by someone else), which the pump then stops.
SaveHook = Callable[[list[Snapshot]], set[str]]
# The logprob entries (JSON-ready) of the tokens of one output, for a generation that asked for them.
LogprobsHook = Callable[[RequestOutput], list[dict[str, Any]]]


class Tracked:
    """One generation held by the pump. Its fields are written by the pump's threads; the task's thread reads
    them once :meth:`wait` has returned."""

    def __init__(
        self,
        pump: GenerationPump,
        generation_id: str,
        *,
        save: SaveHook | None,
        logprobs: LogprobsHook | None,
        leased: bool,
    ) -> None:
        self.pump = pump
        self.id = generation_id
        self.save = save
        self.logprobs = logprobs
        self.leased = leased  # a reader holds a lease on it: stop it when the lease lapses
        self.engine: Engine | None = None
        self.start_seq = retrying_redis(
            lambda: streams.last_seq(generation_id, client=pump._redis),
            deadline_s=pump.redis_retry_s,
            what=f"Reading the stream of {generation_id}",
        )
        # Written by the writer thread (under the pump's lock where the keeper reads them).
        self.parts: list[str] = []  # every piece of text handed over, piece i at seq start_seq + 1 + i
        self.written_seq = self.start_seq  # the last seq the stream holds
        self.pending: list[streams.Entry] = []
        self.carried_logprobs: list[dict[str, Any]] = []  # of tokens whose text is not out yet
        self.completion_tokens = 0
        self.first_text_at: float | None = None  # time.time() of the first text
        self.final: RequestOutput | None = None
        # Why it ended early, set by whichever thread saw it.
        self.cancel_seen = False  # its cancel flag was set
        self.reader_gone = False  # its reader's lease lapsed
        self.lease_misses = 0  # ticks in a row that found the reader's lease lapsed (keeper)
        self.taken_away = False  # deleted, or ended by another writer: nothing more goes to its stream
        self.failure: Exception | None = None  # its stream could not be written
        self.saved_seq = self.start_seq  # written by the keeper
        self._aborted = False
        self._ended = threading.Event()

    @property
    def text(self) -> str:
        """All the text the engine made (once ended; written to the stream or not)."""
        return "".join(self.parts)

    @property
    def seq(self) -> int:
        """The seq of the last delta made (written or not)."""
        return self.start_seq + len(self.parts)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the generation has ended: its final output and every delta before it are in the stream,
        or it was taken away, or its stream failed. False if ``timeout`` ran out first."""
        return self._ended.wait(timeout)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def attach(self, engine: Engine) -> None:
        """The generation is about to be submitted to ``engine`` (aborts go there from now on)."""
        with self.pump._lock:
            self.engine = engine
            abort_now = self.cancel_seen or self.reader_gone or self.taken_away
        if abort_now:
            self._abort()

    def _abort(self) -> None:
        """Stop it in the engine, once (the engine then hands over a last output, "abort")."""
        if self.engine is not None and not self._aborted:
            self._aborted = True
            self.engine.abort(self.id)

    def _end(self) -> None:
        self._ended.set()


class GenerationPump:
    """See the module docstring. One per process: :func:`get_pump`."""

    def __init__(self, client: redis.Redis | None = None) -> None:
        self._redis = client or get_redis()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._tracked: dict[str, Tracked] = {}
        self._steps: list[list[RequestOutput]] = []
        self._dirty: set[str] = set()  # ids with entries still to append (after a failed try)
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.redis_retry_s = float(settings.DJINN_REDIS_RETRY_S)

    # -- the task's side -----------------------------------------------------------------------------

    def track(
        self,
        generation_id: str,
        *,
        save: SaveHook | None = None,
        logprobs: LogprobsHook | None = None,
        leased: bool = False,
    ) -> Tracked:
        """Start holding a generation: heartbeats (and saves through ``save``) from now on. ``leased``: stop it
        when its reader's lease lapses."""
        tracked = Tracked(self, generation_id, save=save, logprobs=logprobs, leased=leased)
        with self._lock:
            self._tracked[generation_id] = tracked
            self._start_threads()
        return tracked

    def untrack(self, tracked: Tracked) -> None:
        """The task is done with it: no heartbeat, no save, and what the engine still hands over is dropped."""
        with self._lock:
            if self._tracked.get(tracked.id) is tracked:
                del self._tracked[tracked.id]
            self._dirty.discard(tracked.id)

    def append_terminal(self, tracked: Tracked, type_: str, **fields: Any) -> int | None:
        """Append the generation's ``done`` or ``error`` event after its deltas (retried for up to
        DJINN_REDIS_RETRY_S); its seq, or None when another writer has ended the stream already.
        Raises redis.RedisError when Redis stays unreachable. Call once :meth:`Tracked.wait` has returned."""
        seq = tracked.written_seq + 1
        entry = streams.Entry(seq, streams.event_json(tracked.id, seq, type_, **fields))

        def append() -> streams.Appended:
            return streams.append(self._redis, {tracked.id: [entry]})[tracked.id]

        result = retrying_redis(append, deadline_s=self.redis_retry_s, what=f"Ending the stream of {tracked.id}")
        if result.conflict:
            return None
        tracked.written_seq = seq
        return seq

    # -- the engine's side ---------------------------------------------------------------------------

    def on_step(self, outputs: list[RequestOutput]) -> None:
        """The engine's sink: every output of one step for the generations submitted with it. Returns at once."""
        with self._lock:
            self._steps.append(outputs)
            self._work.notify()

    # -- the writer thread ---------------------------------------------------------------------------

    def _start_threads(self) -> None:
        if self._threads and all(thread.is_alive() for thread in self._threads):
            return
        self._threads = [
            threading.Thread(target=self._write_loop, name="djinn-pump-writer", daemon=True),
            threading.Thread(target=self._keep_loop, name="djinn-pump-keeper", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _write_loop(self) -> None:
        failing_since: float | None = None  # while appends fail: when they began to
        attempt = 0
        next_try = 0.0  # while appends fail: no try before this (monotonic)
        while True:
            with self._lock:
                while not self._steps and not (self._dirty and time.monotonic() >= next_try):
                    self._work.wait(max(0.0, next_try - time.monotonic()) if self._dirty else None)
                steps, self._steps = self._steps, []
                routed = [(self._tracked.get(output.request_id), output) for outputs in steps for output in outputs]
            for tracked, output in routed:
                if tracked is not None:
                    self._take(tracked, output)
            if time.monotonic() < next_try:
                continue  # backing off: the new entries wait with the others
            with self._lock:
                batch = {gid: self._tracked[gid] for gid in self._dirty if gid in self._tracked}
                self._dirty.clear()
            if not batch:
                continue
            try:
                results = streams.append(self._redis, {gid: list(t.pending) for gid, t in batch.items()})
            except redis.RedisError as exc:
                attempt += 1
                failing_since = failing_since or time.monotonic()
                failing_for = time.monotonic() - failing_since
                if failing_for < self.redis_retry_s:
                    logger.warning("Appending to %d streams failed (try %d): %s", len(batch), attempt, exc)
                    next_try = time.monotonic() + backoff_s(attempt)
                    with self._lock:
                        self._dirty.update(batch)
                    continue
                logger.error("Appending to %d streams failed for %.0f s: giving up on them", len(batch), failing_for)
                self._lose_all(batch, exc)
            except Exception as exc:  # a bug here must not leave every generation waiting for ever
                logger.exception("Appending to %d streams failed", len(batch))
                self._lose_all(batch, exc)
            else:
                for tracked in batch.values():
                    self._written(tracked, results[tracked.id])
            failing_since, attempt, next_try = None, 0, 0.0

    def _take(self, tracked: Tracked, output: RequestOutput) -> None:
        """Turn one engine output into the entry to append (writer thread)."""
        if tracked.taken_away or tracked.failure is not None or tracked.final is not None:
            return
        if tracked.logprobs is not None and output.logprobs:
            tracked.carried_logprobs += tracked.logprobs(output)
        text = output.text.replace("\x00", "")  # PostgreSQL text cannot hold NUL
        with self._lock:
            tracked.completion_tokens = output.usage.completion_tokens
            if text:
                if tracked.first_text_at is None:
                    tracked.first_text_at = time.time()
                tracked.parts.append(text)
                seq = tracked.seq
                side = json.dumps(tracked.carried_logprobs) if tracked.carried_logprobs else None
                tracked.carried_logprobs = []
                tracked.pending.append(
                    streams.Entry(
                        seq,
                        streams.event_json(tracked.id, seq, "delta", text=text, tokens=tracked.completion_tokens),
                        side,
                    )
                )
            if output.finish_reason is not None:
                tracked.final = output
            self._dirty.add(tracked.id)  # even with no text: the append reads the cancel flag

    def _written(self, tracked: Tracked, result: streams.Appended) -> None:
        with self._lock:
            sent = tracked.pending
            if sent:
                tracked.written_seq = sent[-1].seq
            tracked.pending = []
            if result.conflict:
                # Someone else ended its stream (the sweeper failed it, or a redelivery found it orphaned).
                logger.warning(
                    "Generation %s was ended by another writer", tracked.id, extra={"generation_id": tracked.id}
                )
                tracked.taken_away = True
            if result.cancel_requested:
                tracked.cancel_seen = True
            stop = result.conflict or result.cancel_requested
            done = tracked.final is not None or result.conflict
        if stop:
            tracked._abort()
        if done:
            tracked._end()

    def _lose_all(self, batch: dict[str, Tracked], exc: Exception) -> None:
        for tracked in batch.values():
            with self._lock:
                tracked.failure = StreamLost(f"Could not append to the stream of {tracked.id}: {exc}")
                tracked.pending = []
            tracked._abort()
            tracked._end()

    # -- the keeper thread ---------------------------------------------------------------------------

    def _keep_loop(self) -> None:
        while True:
            time.sleep(TICK_S)
            with self._lock:
                active = [t for t in self._tracked.values() if not t.ended]
            if not active:
                continue
            try:
                self._beat(active)
            except redis.RedisError as exc:
                logger.warning("Heartbeats of %d generations failed: %s", len(active), exc)
            except Exception:  # the keeper serves every generation: one bad tick must not stop it
                logger.exception("Heartbeats of %d generations failed", len(active))
            try:
                self._save(active)
            except Exception:
                logger.exception("Saving %d generations failed", len(active))
            finally:
                # One short query a second: holding a connection in between would pin a server slot (and a
                # PgBouncer one) for the life of the process.
                close_connections()

    def _beat(self, active: list[Tracked]) -> None:
        """Heartbeats for readers, and the cancel flags and reader leases, of all of them in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for tracked in active:
            pipe.set(streams.heartbeat_key(tracked.id), "1", ex=streams.HEARTBEAT_TTL_S)
            pipe.exists(streams.cancel_key(tracked.id))
            if tracked.leased:
                pipe.exists(streams.lease_key(tracked.id))
        results = iter(pipe.execute())
        for tracked in active:
            next(results)
            cancelled = bool(next(results))
            missing = tracked.leased and not next(results)
            tracked.lease_misses = tracked.lease_misses + 1 if missing else 0
            gone = tracked.lease_misses >= LEASE_MISSES
            if not (cancelled or gone):
                continue
            with self._lock:
                tracked.cancel_seen = tracked.cancel_seen or cancelled
                tracked.reader_gone = tracked.reader_gone or gone
            if gone and not cancelled:
                logger.info("The reader of %s is gone: stopping it", tracked.id, extra={"generation_id": tracked.id})
            tracked._abort()

    def _save(self, active: list[Tracked]) -> None:
        """Partial text and heartbeats through each save hook, one call per hook."""
        by_hook: dict[SaveHook, list[tuple[Tracked, Snapshot]]] = {}
        with self._lock:
            for tracked in active:
                if tracked.save is None or tracked.final is not None:
                    continue  # nothing to save, or ending: its task saves the end
                written = tracked.written_seq - tracked.start_seq
                snapshot = Snapshot(
                    generation_id=tracked.id,
                    content="".join(tracked.parts[:written]),  # never ahead of the stream
                    seq=tracked.written_seq,
                    completion_tokens=tracked.completion_tokens,
                    changed=tracked.written_seq != tracked.saved_seq,
                )
                by_hook.setdefault(tracked.save, []).append((tracked, snapshot))
        for hook, items in by_hook.items():
            try:
                gone = hook([snapshot for _tracked, snapshot in items])
            except DatabaseError as exc:
                logger.warning("Saving %d partial replies failed: %s", len(items), exc)
                continue
            for tracked, snapshot in items:
                tracked.saved_seq = snapshot.seq
                if snapshot.generation_id in gone:
                    self._take_away(tracked)

    def _take_away(self, tracked: Tracked) -> None:
        with self._lock:
            if tracked.final is not None:
                return  # it ended meanwhile: its task's guarded save decides
            tracked.taken_away = True
        logger.info("Generation %s was taken away: stopping it", tracked.id, extra={"generation_id": tracked.id})
        tracked._abort()
        tracked._end()


_lock = threading.Lock()
_pump: GenerationPump | None = None


def get_pump() -> GenerationPump:
    """This process's pump."""
    global _pump
    if _pump is None:
        with _lock:
            if _pump is None:
                _pump = GenerationPump()
    return _pump
