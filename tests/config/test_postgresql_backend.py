"""config.postgresql: timestamps come back exactly as Django's own loader gives them, through psycopg's C code."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg.pq import Format

from config.postgresql.base import _TIMESTAMPTZ_OID, UtcTimestamptzLoader

pytestmark = pytest.mark.django_db

SQL = "SELECT TIMESTAMPTZ '2026-03-29 01:30:00.123456+02', TIMESTAMPTZ '1999-12-31 23:59:59+00', NOW()"


def test_connections_read_timestamps_with_the_fast_loader_and_django_keeps_it():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        loader = cursor.cursor.adapters.get_loader(_TIMESTAMPTZ_OID, Format.TEXT)

    assert loader is UtcTimestamptzLoader


def test_timestamps_are_the_same_aware_utc_datetimes_as_djangos_loader_gives():
    with connection.cursor() as cursor:
        cursor.execute(SQL)
        ours = cursor.fetchone()
    with connection.cursor() as cursor:
        register_tzloader(datetime.UTC, cursor.cursor)  # Django's own, on this cursor only
        cursor.execute(SQL)
        djangos = cursor.fetchone()

    assert ours[:2] == djangos[:2]
    assert ours[0] == datetime.datetime(2026, 3, 28, 23, 30, 0, 123456, tzinfo=datetime.UTC)
    assert all(value.tzinfo is datetime.UTC for value in ours)


def test_the_test_database_is_dropped_even_while_a_pooler_holds_connections_to_it():
    import inspect
    import uuid

    import psycopg
    from django.db.backends.base.creation import BaseDatabaseCreation

    from config.env import database_url

    # The private method we override is still the one destroy_test_db calls, with the same arguments.
    assert list(inspect.signature(BaseDatabaseCreation._destroy_test_db).parameters) == [
        "self",
        "test_database_name",
        "verbosity",
    ]
    assert "self._destroy_test_db(" in inspect.getsource(BaseDatabaseCreation.destroy_test_db)

    name = f"djinn_drop_{uuid.uuid4().hex[:8]}"
    with connection.creation._nodb_cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    held = psycopg.connect(database_url({**connection.settings_dict, "NAME": name}), autocommit=True)
    try:
        connection.creation._destroy_test_db(name, verbosity=0)
        with connection.creation._nodb_cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name])
            assert cursor.fetchone() == (0,)
    finally:
        held.close()
