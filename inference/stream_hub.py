"""The web process's stream reader: one blocking XREAD for every generation stream the process watches.

Followers (``inference.follow``) open a :class:`Watch` (``async with watch({generation_id: after})``) and
take its events with ``await watch.next(timeout_s)``. Behind every watch of an event loop runs one reader
task, which holds one Redis connection blocked in ``XREAD BLOCK ... STREAMS <every watched stream>`` and
hands each watch the events of its streams after its own last seq. The inference worker appends a step's
deltas for all its generations in one round trip (``inference.pump``), so one XREAD answer carries them all:
one read and one wake-up per engine step for the whole process, rather than one per token per reader.
When a read fails, every watch is told (``next`` raises it) and the reader stops; the next watch starts a
new one.

A new watch joins the XREAD in flight through a wake-up stream of the reader's own (``djinn:hub:<id>``,
short and expiring), so it never waits for the block to time out. Events are the stream contract's
(``inference.streams``): read from ``after``, in seq order, no gap and no duplicate, per watch.
The caller checks that its user owns the generation before it opens a watch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import redis.asyncio

from inference import streams
from inference.redis import MAX_BLOCK_MS, get_async_redis

logger = logging.getLogger(__name__)

WAKE_TTL_S = 60 * 60
WAKE_MAXLEN = 16


class Watch:
    """The events of some generations' streams after a seq each, as the hub reads them."""

    def __init__(self, hub: StreamHub, positions: dict[str, int]) -> None:
        self._hub = hub
        self.after = positions  # generation id -> the last seq taken in
        self._events: list[dict[str, Any]] = []
        self._ready = asyncio.Event()
        self._error: BaseException | None = None

    async def next(self, timeout_s: float) -> list[dict[str, Any]]:
        """The events that came since the last call (each generation's in seq order), waiting up to
        ``timeout_s`` seconds for the first; an empty list when none came. Raises what made the reader fail
        (a Redis error)."""
        if not self._events and self._error is None:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that lands as
            # the event is set, and a stream whose client left would then run to its end.
            try:
                async with asyncio.timeout(timeout_s):
                    await self._ready.wait()
            except TimeoutError:
                pass
        if self._error is not None:
            raise self._error
        events, self._events = self._events, []
        self._ready.clear()
        return events

    def drop(self, generation_id: UUID | str) -> None:
        """Stop following one of the generations (its stream has ended)."""
        self._hub.remove(self, [str(generation_id)])

    def deliver(self, generation_id: str, events: list[dict[str, Any]]) -> None:
        after = self.after.get(generation_id)
        if after is None:
            return
        fresh = [event for event in events if event["seq"] > after]
        if fresh:
            self.after[generation_id] = fresh[-1]["seq"]
            self._events += fresh
            self._ready.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._ready.set()


class StreamHub:
    """One event loop's reader of generation streams (see the module's docstring)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._redis = client
        self._watches: dict[str, set[Watch]] = {}  # generation id -> its watches
        self._reader: asyncio.Task[None] | None = None
        self._reading: set[str] = set()  # generation ids of the XREAD in flight
        self._wake_key = f"djinn:hub:{uuid.uuid4().hex}"
        self._wake_after = "0-0"

    async def add(self, watch: Watch) -> None:
        for generation_id in watch.after:
            self._watches.setdefault(generation_id, set()).add(watch)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="djinn stream hub")
        elif self._reading and not set(watch.after) <= self._reading:
            # The XREAD in flight does not cover these streams: make it return, so that the next one does.
            # (Between two reads, the reader builds the next one from the watches as they are then.)
            await self._wake()

    async def _wake(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.xadd(self._wake_key, {"w": "1"}, maxlen=WAKE_MAXLEN, approximate=True)
        pipe.expire(self._wake_key, WAKE_TTL_S)
        await pipe.execute()

    def remove(self, watch: Watch, generation_ids: list[str] | None = None) -> None:
        for generation_id in generation_ids if generation_ids is not None else list(watch.after):
            watch.after.pop(generation_id, None)
            watches = self._watches.get(generation_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[generation_id]

    async def close(self, watch: Watch) -> None:
        """Remove a watch that is done; when it was the last one, end the XREAD in flight now rather than
        when it times out (it holds a connection meanwhile, and a loop shutting down would wait for it)."""
        self.remove(watch)
        if not self._watches and self._reading:
            try:
                await self._wake()
            except Exception as exc:  # best effort: the read times out by itself anyway
                logger.debug("Waking the idle stream reader failed: %s", exc)

    async def _read(self) -> None:
        try:
            while self._watches:
                positions = {
                    streams.stream_key(generation_id): f"0-{min(w.after[generation_id] for w in watches)}"
                    for generation_id, watches in self._watches.items()
                }
                positions[self._wake_key] = self._wake_after
                self._reading = set(self._watches)
                try:
                    response = await self._redis.xread(positions, block=MAX_BLOCK_MS)
                finally:
                    self._reading = set()
                self._dispatch(response)
        except Exception as exc:  # the reader serves every watch: whatever stops it must reach them all
            logger.warning("Reading generation streams failed", exc_info=True)
            for watches in self._watches.values():
                for watch in watches:
                    watch.fail(exc)
            self._watches.clear()

    def _dispatch(self, response: Any) -> None:
        # RESP2 gives [[key, entries]], RESP3 {key: [entries]}; each entry is (id, {"event": json}).
        items = response.items() if isinstance(response, dict) else (response or [])
        for key, entries in items:
            if key == self._wake_key:
                self._wake_after = entries[-1][0]
                continue
            events = [json.loads(fields["event"]) for _id, fields in entries]
            generation_id = key.removeprefix(streams.STREAM_KEY_PREFIX)
            for watch in list(self._watches.get(generation_id, ())):
                watch.deliver(generation_id, events)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamHub] = weakref.WeakKeyDictionary()


def get_hub() -> StreamHub:
    """The running event loop's hub. Must be called from a coroutine."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = StreamHub(get_async_redis())
    return hub


@asynccontextmanager
async def watch(positions: dict[UUID | str, int]) -> AsyncIterator[Watch]:
    """Follow the streams of ``positions`` (generation id -> the last seq the caller has, 0 for none)."""
    for after in positions.values():
        if after < 0:
            raise ValueError(f"after must be a seq number (0 or more), got {after}.")
    hub = get_hub()
    opened = Watch(hub, {str(generation_id): after for generation_id, after in positions.items()})
    try:
        await hub.add(opened)
        yield opened
    finally:
        await hub.close(opened)
