"""Model instances from SQL written once, for the reads every request makes.

Building an ORM query costs CPU on every call (about 0.4 ms for a one-table SELECT on the machines this
was measured on, more than PostgreSQL takes to run it), so the hottest reads (the API key of each API
request, a conversation and its shown branch) use a statement built once from the models' own columns
and turn its rows into instances exactly as the ORM would: the same fields, the same converters (time
zones, JSON), ``from_db`` so the instances are "from the database" as far as Django knows.

Lives in ``accounts``, the app every other one may import (see the dependency picture in the design).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from django.db import connections, router
from django.db.models import Field, Model

M = TypeVar("M", bound=Model)

Converter = Callable[[Any, Any, Any], Any]


class Columns(Generic[M]):
    """A model's concrete columns, in order, as a SELECT list and back into an instance."""

    def __init__(self, model: type[M]) -> None:
        self.model = model
        self.fields: list[Field] = list(model._meta.concrete_fields)
        self.attnames = [field.attname for field in self.fields]
        self.alias = router.db_for_read(model)
        self._converters: list[list[Converter]] | None = None

    def __len__(self) -> int:
        return len(self.fields)

    def select(self, table: str) -> str:
        """``"t"."a", "t"."b", ...`` for ``table`` (a table name or an alias, quoted here)."""
        qn = connections[self.alias].ops.quote_name
        return ", ".join(f"{qn(table)}.{qn(field.column)}" for field in self.fields)

    def instance(self, values: Sequence[Any]) -> M:
        """The instance whose columns are ``values`` (as many as there are fields, in their order)."""
        connection = connections[self.alias]
        if self._converters is None:  # on first use, when the connection exists
            self._converters = [
                connection.ops.get_db_converters(field) + field.get_db_converters(connection) for field in self.fields
            ]
        converted = []
        for field, converters, value in zip(self.fields, self._converters, values, strict=True):
            for converter in converters:
                value = converter(value, field, connection)
            converted.append(value)
        return self.model.from_db(self.alias, self.attnames, converted)


def quote(model: type[Model], name: str) -> str:
    """``name`` (a table or column) quoted for the database ``model`` is read from."""
    return connections[router.db_for_read(model)].ops.quote_name(name)


def fetch(model: type[Model], sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the database ``model`` is read from; all its rows."""
    with connections[router.db_for_read(model)].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
