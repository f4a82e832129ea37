"""Bounded retries for the worker's writes: a PostgreSQL or Redis blip is waited out, an outage is not.

The inference worker must not lose a reply to a failover of a few seconds, nor hang on a dependency that is
gone. :func:`retrying` calls a function until it succeeds or the deadline passes, backing off between tries
(with jitter, so a whole worker's generations do not retry in step), and then raises the last error.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from django.db import DatabaseError, InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0

# Errors that say the server could not be reached or the connection broke: worth another try. (An
# IntegrityError or a programming error would fail the same way again.)
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def backoff_s(attempt: int) -> float:
    """The pause before try ``attempt + 1`` (attempt counts from 1): doubling from FIRST_BACKOFF_S up to
    MAX_BACKOFF_S, with up to 50% jitter."""
    base = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempt - 1))
    return base * (0.5 + random.random() / 2)


def retrying(
    func: Callable[[], T],
    *,
    errors: tuple[type[Exception], ...],
    deadline_s: float,
    what: str,
    on_error: Callable[[Exception], None] | None = None,
) -> T:
    """``func()``, tried again on ``errors`` until ``deadline_s`` seconds have passed; then the last error is
    raised. ``on_error`` runs after each failed try (e.g. to drop a broken connection)."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return func()
        except errors as exc:
            if on_error is not None:
                on_error(exc)
            pause = backoff_s(attempt)
            if time.monotonic() - started + pause > deadline_s:
                logger.error("%s failed after %d tries: %s", what, attempt, exc)
                raise
            logger.warning("%s failed (try %d), trying again in %.2f s: %s", what, attempt, pause, exc)
            time.sleep(pause)


def close_connections(exc: Exception | None = None) -> None:
    """Close this thread's database connections, so the next query opens a fresh one (with a pool: hands
    them back, and the pool discards broken ones)."""
    for connection in connections.all(initialized_only=True):
        try:
            connection.close()
        except DatabaseError:
            logger.debug("Closing a broken database connection failed", exc_info=True)


def release_connection() -> None:
    """Hand this thread's default connection back to the pool before work that does not need it (Redis round
    trips): a request holding it across them, under a burst or a slow Redis, starves the pool for every other
    request of the process. Nothing happens inside a transaction (a caller's, or a test's)."""
    connection = connections["default"]
    if connection.connection is not None and not connection.in_atomic_block:
        connection.close()


def retrying_db(func: Callable[[], T], *, deadline_s: float, what: str) -> T:
    """:func:`retrying` for PostgreSQL work: a try that fails drops the thread's connections first."""
    return retrying(func, errors=DATABASE_UNAVAILABLE, deadline_s=deadline_s, what=what, on_error=close_connections)


def retrying_redis(func: Callable[[], T], *, deadline_s: float, what: str) -> T:
    return retrying(func, errors=REDIS_UNAVAILABLE, deadline_s=deadline_s, what=what)
