"""Redis clients for generation streams and flags, built once on ``settings.REDIS_URL``.

Sync code (Celery threads, SSE views) shares one thread-safe connection pool per process. asyncio code
(the WebSocket consumer) gets one client per event loop: a redis.asyncio connection belongs to the loop
that opened it, and each ASGI worker or test may run its own loop.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from django.conf import settings
from redis.backoff import ExponentialBackoff

# redis-py's default socket timeout (5 s) is shorter than a blocking XREAD may wait (up to 10 s), which
# would turn a quiet stream into a TimeoutError. Readers block for at most MAX_BLOCK_MS.
MAX_BLOCK_MS = 10_000
SOCKET_TIMEOUT_S = MAX_BLOCK_MS / 1000 + 20
CONNECT_TIMEOUT_S = 2
# Connections a process may open at once. Past that a command waits up to POOL_TIMEOUT_S for one (redis-py's
# default pool refuses the 101st at once: a burst of a few hundred streams failed that way in the fault suite).
MAX_CONNECTIONS = 1000
POOL_TIMEOUT_S = 5
POOL_OPTIONS = {
    "decode_responses": True,  # responses as str
    "socket_timeout": SOCKET_TIMEOUT_S,
    "socket_connect_timeout": CONNECT_TIMEOUT_S,
    "max_connections": MAX_CONNECTIONS,
    "timeout": POOL_TIMEOUT_S,
}
# A pooled connection that Redis closed (it restarted) fails the command sent on it; redis-py retries none by
# default. Djinn's commands may be sent again (appends are idempotent, flags and leases are SETs): one more try
# on a fresh connection, and a short backoff, before the caller's own bounded retries take over.
RETRY_ERRORS = [redis.ConnectionError, redis.TimeoutError]


def retry_options(asynchronous: bool) -> dict[str, object]:
    retry_class = redis.asyncio.retry.Retry if asynchronous else redis.retry.Retry
    return {"retry": retry_class(ExponentialBackoff(cap=0.5, base=0.05), 2), "retry_on_error": RETRY_ERRORS}


_lock = threading.Lock()
_sync_client: redis.Redis | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = weakref.WeakKeyDictionary()


def get_redis() -> redis.Redis:
    """The process's client. Responses are decoded to ``str``."""
    global _sync_client
    if _sync_client is None:
        with _lock:
            if _sync_client is None:
                pool = redis.BlockingConnectionPool.from_url(
                    settings.REDIS_URL, **POOL_OPTIONS, **retry_options(asynchronous=False)
                )
                _sync_client = redis.Redis(connection_pool=pool)
    return _sync_client


def get_async_redis() -> redis.asyncio.Redis:
    """The running event loop's client. Must be called from a coroutine."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL, **POOL_OPTIONS, **retry_options(asynchronous=True)
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client
