"""Serializer fields that accept exactly what the OpenAPI schema says they do.

DRF's own fields are lenient (``"5"`` for an integer, ``1`` for true, ``0`` for a string): fine for forms,
but a JSON API that publishes a schema should refuse what the schema refuses, so that clients and the
schema-based tests agree with the server. Query-string values are strings by nature: their fields parse
the one canonical spelling (``true``/``false``, decimal digits).
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers

_DIGITS = re.compile(r"-?[0-9]+")


class Text(serializers.CharField):
    """A JSON string kept as sent: no trimming, and NUL characters dropped rather than refused (PostgreSQL
    cannot store them, and the schema has no way to say "any string but NUL")."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.validators = [v for v in self.validators if type(v).__name__ != "ProhibitNullCharactersValidator"]

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)

    def run_validation(self, data: Any = serializers.empty) -> Any:
        # Length limits apply to the string as sent, as the schema's maxLength does: the NULs go only after.
        value = super().run_validation(data)
        return value.replace("\x00", "") if isinstance(value, str) else value


class JsonInteger(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class JsonNumber(serializers.FloatField):
    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class JsonBoolean(serializers.BooleanField):
    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class JsonUUID(serializers.UUIDField):
    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class _QueryValue(serializers.Field):
    """A query-string value: ``?name=`` is an empty string, which is not a value of the field's type (DRF
    would take it for the parameter left out, and use the default)."""

    def get_value(self, dictionary: Any) -> Any:
        if dictionary.get(self.field_name) == "":
            return ""
        return super().get_value(dictionary)


class QueryBoolean(_QueryValue, serializers.BooleanField):
    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):  # DRF's stand-in for a parameter left out of a query string
            return data
        if data not in ("true", "false"):
            self.fail("invalid", input=data)
        return data == "true"


class QueryInteger(_QueryValue, serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, str) or not _DIGITS.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)
