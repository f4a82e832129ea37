"""Following chat replies for the web side (the chat WebSocket and REST SSE): how a reply whose stream says
nothing has ended, read from PostgreSQL (``inference.follow`` does the rest).

The database is read in a thread of the loop's pool that hands its connection back after each read, so a
stream open for minutes holds no connection (``database_sync_to_async`` closes it: with the pool, that
returns it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.db import DatabaseError
from django.utils.translation import gettext_noop

from accounts.models import User
from conversations import presenters, selectors
from conversations.errors import NotFound
from conversations.models import Message
from inference import streams
from inference.follow import READ_ERRORS, Event, Settle, terminal_event

logger = logging.getLogger(__name__)

# Said to the user in their language where they are shown (the chat WebSocket); English in the stream.
DELETED = gettext_noop("This reply was deleted.")
FAILED = gettext_noop("The reply could not be generated.")


def db(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Run ``func`` (ORM work) in the loop's thread pool, handing the connection back afterwards. Not
    thread-sensitive: Channels' default would run every connection's queries one at a time on one thread."""
    return database_sync_to_async(func, thread_sensitive=False)


def reply_settle(user: User) -> Settle:
    """``settle`` for ``inference.follow.follow``: a finished reply whose stream has nothing more ends with a
    ``done`` or ``error`` event made from its row; a deleted one with an ``error`` coded not_found."""

    async def settle(generation_id: str, last: int) -> Event | None:
        try:
            message = await db(selectors.generation_get)(user=user, generation_id=generation_id)
        except NotFound:  # deleted meanwhile (its conversation, from another tab)
            return terminal_event(generation_id, last, "error", message=DELETED, code=NotFound.code)
        except DatabaseError as exc:
            logger.warning("Could not look at reply %s: %s", generation_id, exc)
            return None  # the next quiet moment looks again
        if not message.is_finished:
            return None
        try:
            if await streams.aread_events(generation_id, after=last):
                return None  # it finished while we looked: the next read delivers the events
        except READ_ERRORS:
            return None
        return final_event(message=message, last=last)

    return settle


def final_event(*, message: Message, last: int) -> Event:
    """The terminal event of a finished reply, from its row."""
    generation_id = str(message.pk)
    if message.status == Message.Status.FAILED:
        return terminal_event(generation_id, last, "error", message=message.error or FAILED, code="generation_failed")
    usage = presenters.message_to_dict(message)["usage"]
    return terminal_event(generation_id, last, "done", finish_reason=message.finish_reason or None, usage=usage)
