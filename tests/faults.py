"""Real faults for tests: FaultyProxy (chaos.proxy) in front of the test database or Redis, and the URL a
child process uses to reach it through the proxy."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from django.conf import settings

from chaos.proxy import FaultyProxy
from config.env import database_url


def database_target() -> tuple[str, int] | str:
    """Where the test database listens: host and port, or a unix socket's path (an embedded server)."""
    db = settings.DATABASES["default"]
    host, port = str(db.get("HOST") or "localhost"), int(db.get("PORT") or 5432)
    if host.startswith("/"):
        return os.path.join(host, f".s.PGSQL.{port}")
    return ("127.0.0.1" if host == "localhost" else host, port)


@contextmanager
def database_proxy() -> Iterator[tuple[FaultyProxy, str]]:
    """A proxy in front of the test database, and the DATABASE_URL that goes through it."""
    proxy = FaultyProxy(database_target()).start()
    try:
        url = database_url({**settings.DATABASES["default"], "HOST": "127.0.0.1", "PORT": proxy.port})
        yield proxy, url
    finally:
        proxy.stop()


@contextmanager
def redis_proxy() -> Iterator[tuple[FaultyProxy, str]]:
    """A proxy in front of the tests' Redis, and the REDIS_URL (same database number) that goes through it."""
    parsed = redis.connection.parse_url(settings.REDIS_URL)
    target = parsed["path"] if "path" in parsed else (parsed.get("host", "127.0.0.1"), parsed.get("port", 6379))
    proxy = FaultyProxy(target).start()
    try:
        yield proxy, f"redis://127.0.0.1:{proxy.port}/{parsed.get('db', 0)}"
    finally:
        proxy.stop()
