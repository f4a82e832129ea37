"""Reading the generation streams of one /v1 request (one stream per choice) as one sequence of events,
through ``inference.follow`` like every other reader.

Nobody but this reader watches an API generation, so its ``settle`` notices when no worker takes the request
(DJINN_GENERATION_QUEUED_TIMEOUT_S) or when the worker writing it stops heart-beating
(DJINN_GENERATION_STALE_AFTER_S), and ends that choice with an ``error`` event coded ``generation_lost``
rather than wait for ever. While it reads, it renews the readers' lease of each choice, so the worker stops a
completion whose client went away even when this process was killed and could not say so. However the reader
ends before every stream has ended (the client went away, the task was cancelled, an error), it sets the
cancel flag of the unfinished generations, without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from uuid import UUID

from django.conf import settings

from conversations import generations, limits
from inference import streams
from inference.follow import READ_ERRORS, Event, FollowInterrupted, Settle, follow, terminal_event
from inference.redis import get_redis

logger = logging.getLogger(__name__)

# A choice that brings nothing for this long is checked on (is a worker alive?), and the reader yields an
# empty batch for a keep-alive.
QUIET_S = 2.0
GENERATION_LOST = "generation_lost"
WORKER_STOPPED = "The worker generating this completion stopped. Try again."
NOBODY_TOOK_IT = "No worker took this request in time. Try again later."
STREAM_UNREADABLE = "The completion's stream could not be read. Try again."


async def choice_events(generation_ids: list[UUID], *, user_id: int) -> AsyncIterator[list[tuple[int, Event]]]:
    """Batches of ``(choice index, event)`` in stream order per choice, until every choice's stream has
    ended with a ``done`` or ``error`` event. An empty batch means nothing came for QUIET_S (a moment to
    send a keep-alive). Left early, the choices still running are cancelled, and those no worker has
    claimed yet give ``user_id``'s plan reservation back at once."""
    index_of = {str(generation_id): index for index, generation_id in enumerate(generation_ids)}
    unfinished = set(index_of)  # not ended, or given up here: the worker must drop them
    try:
        try:
            async for batch in follow(
                {generation_id: 0 for generation_id in index_of},
                settle=_liveness(),
                quiet_s=QUIET_S,
                fresh=True,
                lease=True,
            ):
                for event in batch:
                    if event["type"] in streams.TERMINAL_TYPES and event.get("code") != GENERATION_LOST:
                        unfinished.discard(event["id"])
                yield [(index_of[event["id"]], event) for event in batch]
        except FollowInterrupted as exc:
            lost = [
                terminal_event(g, 0, "error", message=STREAM_UNREADABLE, code=GENERATION_LOST) for g in exc.positions
            ]
            yield [(index_of[event["id"]], event) for event in lost]
    finally:
        if unfinished:
            # In a thread of the loop's pool, not awaited: this runs while the request is being cancelled or the
            # generator closed, where an await could be cut short, and a call here would block the event loop.
            asyncio.get_running_loop().run_in_executor(None, _cancel, sorted(unfinished), user_id)


def _cancel(generation_ids: list[str], user_id: int) -> None:
    try:
        for generation_id in generation_ids:
            streams.request_cancel(generation_id)
            # Still queued: whoever takes it drops it (its reader is gone), maybe many minutes from now; a
            # client that retries must not find its slots held by the requests it gave up on.
            if not get_redis().exists(generations.claim_key(generation_id)):
                limits.release(user_id=user_id, generation_id=generation_id)
    except READ_ERRORS as exc:
        # Redis is away: the worker stops them anyway once their reader's lease lapses.
        logger.warning("Could not cancel %d generations: %s", len(generation_ids), exc)


def _liveness() -> Settle:
    """``settle`` for API generations: an error event when no worker took one in time, or its worker died."""
    loop = asyncio.get_running_loop()
    queued_at = loop.time()
    last_sign_of_life: dict[str, float] = {}

    async def settle(generation_id: str, last: int) -> Event | None:
        now = loop.time()
        try:
            alive = await streams.aworker_alive(generation_id)
        except READ_ERRORS:
            return None  # Redis is away: the reader's own retries decide
        if alive or last > 0:
            last_sign_of_life.setdefault(generation_id, now)
        if alive:
            last_sign_of_life[generation_id] = now
            return None
        seen = last_sign_of_life.get(generation_id)
        if seen is not None and now - seen > settings.DJINN_GENERATION_STALE_AFTER_S:
            logger.warning("Generation %s lost its worker", generation_id, extra={"generation_id": generation_id})
            return terminal_event(generation_id, last, "error", message=WORKER_STOPPED, code=GENERATION_LOST)
        if seen is None and now - queued_at > settings.DJINN_GENERATION_QUEUED_TIMEOUT_S:
            logger.warning("No worker took generation %s", generation_id, extra={"generation_id": generation_id})
            return terminal_event(generation_id, last, "error", message=NOBODY_TOOK_IT, code=GENERATION_LOST)
        return None

    return settle
