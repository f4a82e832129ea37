"""The inference worker's stream writes, batched across generations.

Each engine step yields one delta for every generation the worker is writing. Written one by one, that is
one Redis round trip per token per generation, on the cores the engine needs. Here they are handed (by the
engine thread, through each generation's sink: ``conversations.replies.Generation``) to one writer thread
per process instead, which appends everything pending (any number of generations, any number of deltas
each) in one MULTI/EXEC: one round trip per step, and readers blocked on several of those streams wake
once, with all of them.

The stream contract (``inference.streams``) is unchanged: one stream per generation, dense seq ids 1, 2,
3..., the stream expiring an hour after its last write. The same transaction reads each generation's
cancel flag, and the writer thread aborts a cancelled generation in the engine at once (``on_cancel``),
so a cancel still lands within one engine step. Terminal events (``done``, ``error``) are written by the
generation's own thread, synchronously, once everything it handed over is in the stream.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import redis

from inference import streams
from inference.redis import get_redis

logger = logging.getLogger(__name__)

# A step's deltas reach the writer thread one task thread at a time: it waits at most this long (seconds)
# for the rest of the generations it is writing before it writes what it has.
LINGER_S = 0.002
# The stream's time to live is set again at most this often (seconds) while deltas flow, and with every
# terminal event, so a stream still expires about an hour after its last write.
TTL_REFRESH_S = 1.0


class StreamWriteFailed(Exception):
    """Deltas handed to the writer thread could not be appended (Redis failed): the generation must stop."""


@dataclass
class _Delta:
    writer: BatchedStreamWriter
    seq: int
    event: str | None  # the entry's JSON; None: nothing to append, only the cancel flag to read
    beside: tuple[str, str] | None  # (hash key, value) for field <seq>, written with the delta, before it


class BatchedStreamWriter(streams.StreamWriter):
    """A StreamWriter whose deltas go through the process's writer thread: ``delta()`` returns at once with
    the seq the delta will have. ``cancel_requested`` turns true once the writer thread has seen the flag
    (and called ``on_cancel``, from that thread). ``close()`` when the generation is over, whatever happened.
    One per generation, used from the generation's thread only."""

    def __init__(self, generation_id: UUID | str, *, on_cancel: Callable[[], None] | None = None) -> None:
        super().__init__(generation_id)
        self.on_cancel = on_cancel
        self.failure: BaseException | None = None  # set by the writer thread
        self.overtaken = False  # set by the writer thread: another writer appended meanwhile
        self.ttl_refreshed_at = 0.0  # monotonic; read and written by the writer thread only
        self.pending = 0  # deltas handed over, not yet written; guarded by the batcher's lock

    def delta(self, text: str, *, beside: tuple[str, str] | None = None) -> int:
        """Hand a piece of the reply over; returns its seq. ``beside`` as for StreamWriter.delta. Raises
        StreamWriteFailed when earlier deltas could not be written."""
        self._raise_failure()
        if self.overtaken:
            # The stale-generation sweeper ended this stream meanwhile: go on after its event, as the
            # synchronous writer does (readers stop at that terminal event anyway).
            self.overtaken = False
            self.seq = self._last_seq()
        self.seq += 1
        event = json.dumps(self.event(self.seq, "delta", text=text))
        _batcher().put(_Delta(self, self.seq, event, beside))
        return self.seq

    def check_cancel(self) -> None:
        """Have the writer thread read the cancel flag with its next batch, though there is nothing to append
        (a step that made no text), so a cancel still lands within a step."""
        self._raise_failure()
        _batcher().put(_Delta(self, self.seq, None, None))

    def done(self, *, finish_reason: str, usage: dict[str, int] | None) -> int:
        self.flush()
        return super().done(finish_reason=finish_reason, usage=usage)

    def error(self, *, message: str, code: str = "generation_failed") -> int:
        self.flush(raise_failure=False)  # the error event is how a failure is told: write it regardless
        return super().error(message=message, code=code)

    def flush(self, *, raise_failure: bool = True) -> None:
        """Wait until every delta handed over is in the stream. Raises StreamWriteFailed (once) if some could
        not be written; the writer then continues after what the stream holds."""
        _batcher().wait_written(self)
        if self.failure is not None:
            self.seq = self._last_seq()
            if raise_failure:
                self._raise_failure()
            self.failure = None

    def close(self) -> None:
        """The generation is over: wait for its deltas, and stop reporting its cancel flag."""
        _batcher().wait_written(self)
        self.on_cancel = None

    def _raise_failure(self) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise StreamWriteFailed(f"Could not append to {self.key}: {failure}") from failure


class StreamBatcher:
    """The writer thread: takes the deltas of every generation of the process and appends all those pending
    in one transaction at a time."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer thread waits here for deltas
        self._written = threading.Condition(self._lock)  # generation threads wait here for theirs to be written
        self._pending: list[_Delta] = []
        self._pending_writers: set[int] = set()  # id() of the writers with a delta in _pending
        self._writers: dict[int, BatchedStreamWriter] = {}  # id() -> writers whose generation goes on
        self._thread: threading.Thread | None = None

    def put(self, delta: _Delta) -> None:
        writer = delta.writer
        with self._lock:
            self._pending.append(delta)
            self._pending_writers.add(id(writer))
            writer.pending += 1
            self._writers[id(writer)] = writer
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="djinn-stream-writer", daemon=True)
                self._thread.start()
            # Wake the writer thread for the first delta, and once every generation has handed one over;
            # not for each, which would cost a thread switch per token.
            if len(self._pending) == 1 or len(self._pending_writers) >= len(self._writers):
                self._work.notify()

    def wait_written(self, writer: BatchedStreamWriter) -> None:
        """Block until every delta ``writer`` handed over is written (or failed); then it counts no more
        among the generations a step's batch waits for."""
        with self._lock:
            while writer.pending:
                self._written.wait()
            self._writers.pop(id(writer), None)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._work.wait()
                # The other generations' deltas of this step are on their way: give them a moment.
                deadline = time.monotonic() + LINGER_S
                while len(self._pending_writers) < len(self._writers):
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._work.wait(left):
                        break
                batch, self._pending = self._pending, []
                self._pending_writers = set()
            try:
                self._write(batch)
            finally:
                with self._lock:
                    for delta in batch:
                        delta.writer.pending -= 1
                    self._written.notify_all()

    def _write(self, batch: list[_Delta]) -> None:
        now = time.monotonic()
        writers = list({id(d.writer): d.writer for d in batch}.values())
        pipe = self._redis.pipeline(transaction=True)
        for delta in batch:
            if delta.event is None:
                continue
            if delta.beside is not None:
                key, value = delta.beside
                pipe.hset(key, str(delta.seq), value)
                pipe.expire(key, streams.STREAM_TTL_S)
            pipe.xadd(delta.writer.key, {"event": delta.event}, id=f"0-{delta.seq}")
        refreshed = [w for w in writers if now - w.ttl_refreshed_at >= TTL_REFRESH_S]
        for writer in refreshed:
            pipe.expire(writer.key, streams.STREAM_TTL_S)
        for writer in writers:
            pipe.exists(streams.cancel_key(writer.generation_id))
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            logger.warning("Appending %d deltas failed", len(batch), exc_info=True)
            for writer in writers:
                writer.failure = exc
            return
        for writer in refreshed:
            writer.ttl_refreshed_at = now
        self._check_appends(batch, results)
        for writer, cancel in zip(writers, results[len(results) - len(writers) :], strict=True):
            if cancel == 1:
                self._cancel(writer)

    @staticmethod
    def _check_appends(batch: list[_Delta], results: list[object]) -> None:
        position = 0
        for delta in batch:
            if delta.event is None:
                continue
            position += 2 if delta.beside is not None else 0
            result = results[position]
            position += 1
            if not isinstance(result, Exception):
                continue
            if isinstance(result, redis.ResponseError) and "equal or smaller" in str(result):
                delta.writer.overtaken = True  # another writer (the sweeper) appended: see BatchedStreamWriter
            else:
                delta.writer.failure = result

    @staticmethod
    def _cancel(writer: BatchedStreamWriter) -> None:
        first = not writer.cancel_requested
        writer.cancel_requested = True
        on_cancel = writer.on_cancel
        if first and on_cancel is not None:
            try:
                on_cancel()
            except Exception:  # the writer thread serves every generation: one bad callback must not stop it
                logger.exception("Cancelling generation %s failed", writer.generation_id)


_lock = threading.Lock()
_instance: StreamBatcher | None = None


def _batcher() -> StreamBatcher:
    global _instance
    if _instance is None:
        with _lock:
            if _instance is None:
                _instance = StreamBatcher(get_redis())
    return _instance
