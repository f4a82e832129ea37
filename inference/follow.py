"""Following generations: the one reader behind the chat WebSocket, REST SSE and /v1 alike.

Given generations and a position in each (the last seq the client has), :func:`follow` yields their events
from the process's stream hub (``inference.stream_hub``: one XREAD for every stream the process follows),
in seq order per generation, with no gap and no duplicate, until each has ended. When a generation's stream
says nothing for a while, it asks the caller's ``settle`` whether the generation has ended some other way
(its stream expired or was never written, the reply was deleted, its worker died) and, if so, yields the
terminal event ``settle`` makes (from the database, for a reply). The caller checks that its user owns the
generations before it follows them. Nothing here holds a database connection: ``settle`` borrows one per
call.

Redis failing is part of the contract: a read that fails is tried again from the same positions, with a
backoff, for up to DJINN_REDIS_RETRY_S; past that :class:`FollowInterrupted` says where each generation
stands, so the client can resume from there (the WebSocket page does, after a pause).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis
from django.conf import settings

from inference import stream_hub, streams
from inference.faults import REDIS_UNAVAILABLE, backoff_s
from inference.redis import get_async_redis

logger = logging.getLogger(__name__)

Event = dict[str, Any]
# settle(generation id, last seq) -> the terminal event to end with, or None while the generation goes on.
Settle = Callable[[str, int], Awaitable[Event | None]]

# What a failed stream read can raise: Redis' own errors, and the OSError of a connection cut under it.
READ_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError, *REDIS_UNAVAILABLE)


class FollowInterrupted(Exception):
    """Redis could not be read for DJINN_REDIS_RETRY_S. ``positions``: the last seq delivered, per generation
    still going on."""

    def __init__(self, positions: dict[str, int]) -> None:
        super().__init__("The reply stream could not be read.")
        self.positions = positions


def terminal_event(generation_id: str, seq: int, type_: str, **fields: Any) -> Event:
    """An event of the stream contract that no stream holds (made from the database, say)."""
    return {
        "id": generation_id,
        "seq": seq,
        "type": type_,
        "text": "",
        "finish_reason": fields.get("finish_reason"),
        "usage": fields.get("usage"),
        "message": fields.get("message"),
        "code": fields.get("code"),
    }


async def follow(
    positions: dict[str, int],
    *,
    settle: Settle,
    quiet_s: float,
    fresh: bool = False,
    lease: bool = False,
) -> AsyncIterator[list[Event]]:
    """Batches of the events of ``positions``' generations (generation id -> the last seq the client has)
    until each one's terminal event has been yielded. An empty batch means nothing came for ``quiet_s``
    seconds (a moment for a keep-alive). ``fresh``: the generations were queued a moment ago and cannot have
    ended, so the first look at the database is skipped. ``lease``: hold the readers' lease of each
    generation while following it (an API completion stops when nobody waits for it).
    Raises FollowInterrupted."""
    leases = _leases() if lease else None
    if leases is not None:
        leases.hold(positions)
    try:
        async for batch in _follow(dict(positions), settle=settle, quiet_s=quiet_s, first=not fresh):
            yield batch
    finally:
        if leases is not None:
            leases.release(positions)


async def _follow(after: dict[str, int], *, settle: Settle, quiet_s: float, first: bool) -> AsyncIterator[list[Event]]:
    loop = asyncio.get_running_loop()
    failing_since: float | None = None
    attempt = 0
    while after:
        try:
            if first:
                # One look that does not wait: a generation whose stream expired or never began ends at once.
                batch = await _read_once(after)
                if batch:
                    yield _advance(after, batch)
                for generation_id in [g for g in after if not any(e["id"] == g for e in batch)]:
                    final = await settle(generation_id, after[generation_id])
                    if final is not None:
                        yield _advance(after, [final])
                first = False
                continue
            async with stream_hub.watch(after) as watch:
                failing_since, attempt = None, 0
                while after:
                    events = await watch.next(quiet_s)
                    if events:
                        batch = _advance(after, events)
                        for event in batch:
                            if event["type"] in streams.TERMINAL_TYPES:
                                watch.drop(event["id"])
                        yield batch
                        continue
                    for generation_id in list(after):
                        final = await settle(generation_id, after[generation_id])
                        if final is not None:
                            watch.drop(generation_id)
                            yield _advance(after, [final])
                    yield []
        except READ_ERRORS as exc:
            attempt += 1
            failing_since = failing_since or loop.time()
            pause = backoff_s(attempt)
            if loop.time() - failing_since + pause > settings.DJINN_REDIS_RETRY_S:
                logger.error("Following %d generations failed for good: %s", len(after), exc)
                raise FollowInterrupted(dict(after)) from exc
            logger.warning("Following %d generations failed (try %d): %s", len(after), attempt, exc)
            await asyncio.sleep(pause)


class _Leases:
    """The readers' leases of one event loop's followers, renewed together: one round trip every
    LEASE_RENEW_S for the whole process, however many API completions it streams."""

    def __init__(self) -> None:
        self.held: dict[str, int] = {}  # generation id -> how many followers hold it
        self.task: asyncio.Task[None] | None = None

    def hold(self, generation_ids: dict[str, int]) -> None:
        for generation_id in generation_ids:
            self.held[generation_id] = self.held.get(generation_id, 0) + 1
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._renew(), name="djinn reader leases")

    def release(self, generation_ids: dict[str, int]) -> None:
        for generation_id in generation_ids:
            count = self.held.get(generation_id, 0) - 1
            if count > 0:
                self.held[generation_id] = count
            else:
                self.held.pop(generation_id, None)

    async def _renew(self) -> None:
        while self.held:
            try:
                await streams.alease_renew(list(self.held))
            except READ_ERRORS as exc:
                logger.warning("Renewing %d reader leases failed: %s", len(self.held), exc)
            await asyncio.sleep(streams.LEASE_RENEW_S)


_lease_keepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Leases] = weakref.WeakKeyDictionary()


def _leases() -> _Leases:
    loop = asyncio.get_running_loop()
    keeper = _lease_keepers.get(loop)
    if keeper is None:
        keeper = _lease_keepers[loop] = _Leases()
    return keeper


async def _read_once(after: dict[str, int]) -> list[Event]:
    response = await get_async_redis().xread(
        {streams.stream_key(generation_id): f"0-{seq}" for generation_id, seq in after.items()}
    )
    return streams.parse_events(response)


def _advance(after: dict[str, int], events: list[Event]) -> list[Event]:
    """The events of the generations still followed (moving their positions); a terminal one ends its
    generation. Events come from the streams after each position, or from ``settle``."""
    fresh = []
    for event in events:
        generation_id = event["id"]
        position = after.get(generation_id)
        if position is None or (event["type"] == "delta" and event["seq"] <= position):
            continue
        fresh.append(event)
        if event["type"] in streams.TERMINAL_TYPES:
            del after[generation_id]
        else:
            after[generation_id] = event["seq"]
    return fresh
