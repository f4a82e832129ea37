"""The PostgreSQL backend: django-prometheus's (query metrics) with timestamps read by psycopg's C code.

Django reads every ``timestamptz`` through a loader of its own, a subclass of psycopg's pure-Python one
(``BaseTzLoader``), so that it can pin the time zone; the C loader that psycopg[binary] brings is never
used. That costs about 3.4 us per value against 0.7 (measured with psycopg-binary 3.3.9): a third of a
millisecond on a conversation of 20 messages, for every read. Here, when Django wants UTC (USE_TZ with
the database TIME_ZONE unset, as in config.settings), the connection reads them with the C loader
instead, which gives the same aware datetimes: Django sets the session's time zone to UTC on connecting,
and psycopg then returns ``datetime.timezone.utc`` as their tzinfo. Any other time zone keeps Django's
loader.

The test database is dropped ``WITH (FORCE)``: behind PgBouncer (CI runs the suite through one) the pooler
keeps server connections to it open after the tests close theirs, and a plain DROP fails ("is being
accessed by other users"), leaving it behind with a warning.
"""

from __future__ import annotations

import datetime
from functools import cache
from typing import Any

import psycopg
from django.db.backends.postgresql.creation import DatabaseCreation as PostgreSQLCreation
from django_prometheus.db.backends.postgresql import base
from psycopg import adapt
from psycopg.pq import Format

_TIMESTAMPTZ_OID = psycopg.adapters.types["timestamptz"].oid
_FAST_LOADER = psycopg.adapters.get_loader(_TIMESTAMPTZ_OID, Format.TEXT)  # the C one with psycopg[binary]


class UtcTimestamptzLoader(adapt.Loader):
    """psycopg's own loader, with the ``timezone`` attribute Django looks for (it then leaves it in place)."""

    timezone = datetime.UTC

    def __init__(self, oid: int, context: adapt.AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self._load = _FAST_LOADER(oid, context).load

    def load(self, data: Any) -> datetime.datetime:
        return self._load(data)


@cache
def _utc_context(template: adapt.AdaptersMap) -> adapt.AdaptersMap:
    context = adapt.AdaptersMap(template)
    context.register_loader("timestamptz", UtcTimestamptzLoader)
    return context


class DatabaseCreation(PostgreSQLCreation):
    # Private to Django: the one method that drops the test database (nothing public would do: the drop
    # happens inside destroy_test_db). tests/config/test_postgresql_backend.py fails if Django's changes shape.
    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        with self._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE {self.connection.ops.quote_name(test_database_name)} WITH (FORCE)")


class DatabaseWrapper(base.DatabaseWrapper):
    creation_class = DatabaseCreation

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        if self.timezone is datetime.UTC and self.timezone_name == "UTC" and "context" in params:
            params["context"] = _utc_context(params["context"])
        return params
