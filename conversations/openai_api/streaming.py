"""Reading the generation streams of one /v1 request (one stream per choice) as one sequence of events.

Nobody but this reader watches an API generation, so it also notices when no worker takes the request
(DJINN_GENERATION_QUEUED_TIMEOUT_S) or when the worker writing it stops heart-beating
(DJINN_GENERATION_STALE_AFTER_S), and gives up with GenerationLost rather than wait for ever.
However the reader ends before every stream has ended (the client went away, the task was cancelled,
an error), it sets the cancel flag of the unfinished generations: their worker drops them within one
engine step and records only the tokens made.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from uuid import UUID

from asgiref.sync import sync_to_async
from django.conf import settings

from inference import stream_hub, streams

logger = logging.getLogger(__name__)

# A choice that brings nothing for this long is checked on (is a worker alive?), and the reader yields an
# empty batch for a keep-alive.
BLOCK_MS = 2_000


class GenerationLost(Exception):
    """No worker took the generation in time, or its worker stopped before finishing it."""


async def choice_events(generation_ids: list[UUID]) -> AsyncIterator[list[tuple[int, dict]]]:
    """Batches of ``(choice index, event)`` in stream order per choice, until every choice's stream has
    ended with a ``done`` or ``error`` event. An empty batch means nothing came for BLOCK_MS (a moment to
    send a keep-alive). Raises GenerationLost."""
    loop = asyncio.get_running_loop()
    index_of = {str(generation_id): index for index, generation_id in enumerate(generation_ids)}
    unfinished = set(range(len(generation_ids)))
    started = [False] * len(generation_ids)
    last_sign_of_life = [loop.time()] * len(generation_ids)
    last_event = [loop.time()] * len(generation_ids)
    queued_at = loop.time()
    try:
        async with stream_hub.watch({generation_id: 0 for generation_id in generation_ids}) as watch:
            while unfinished:
                batch: list[tuple[int, dict]] = []
                for event in await watch.next(BLOCK_MS / 1000):
                    index = index_of[event["id"]]
                    batch.append((index, event))
                    started[index] = True
                    last_sign_of_life[index] = last_event[index] = loop.time()
                    if event["type"] in streams.TERMINAL_TYPES:
                        unfinished.discard(index)
                        watch.drop(event["id"])
                # A choice quiet for BLOCK_MS: is a worker on it (or may one still take it)?
                for index in sorted(unfinished):
                    if loop.time() - last_event[index] >= BLOCK_MS / 1000:
                        last_event[index] = loop.time()
                        await _check_alive(generation_ids[index], index, started, last_sign_of_life, queued_at)
                yield batch
    finally:
        # Synchronous on purpose: this runs while the task is being cancelled or the generator closed,
        # where an await could be interrupted; a SET takes well under a millisecond.
        for index in unfinished:
            streams.request_cancel(generation_ids[index])


async def _check_alive(
    generation_id: UUID, index: int, started: list[bool], last_sign_of_life: list[float], queued_at: float
) -> None:
    """After a read that brought nothing: is a worker on it (or may one still take it)?"""
    now = asyncio.get_running_loop().time()
    if await sync_to_async(streams.worker_alive, thread_sensitive=False)(generation_id):
        started[index] = True
        last_sign_of_life[index] = now
    elif started[index] and now - last_sign_of_life[index] > settings.DJINN_GENERATION_STALE_AFTER_S:
        logger.warning("Generation %s lost its worker", generation_id, extra={"generation_id": str(generation_id)})
        raise GenerationLost("The worker generating this completion stopped. Try again.")
    elif not started[index] and now - queued_at > settings.DJINN_GENERATION_QUEUED_TIMEOUT_S:
        logger.warning("No worker took generation %s", generation_id, extra={"generation_id": str(generation_id)})
        raise GenerationLost("No worker took this request in time. Try again later.")
