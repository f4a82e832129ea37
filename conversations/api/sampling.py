"""REST fields for the sampling parameters, made from the engine's ranges (``inference.engine.SAMPLING_RANGES``,
their one definition): each field accepts exactly its range, narrowed where this API asks for less, and its
schema says so."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.api.fields import JsonInteger, JsonNumber
from inference.engine import SAMPLING_RANGES, Range

JS_SAFE_INTEGER = 2**53


def sampling_field(
    name: str, *, low: float | None = None, high: float | None = None, **kwargs: Any
) -> serializers.Field:
    """The field for sampling parameter ``name``, its engine range narrowed to ``low``..``high`` if given."""
    allowed = SAMPLING_RANGES[name].narrowed(low=low, high=high)
    base = JsonInteger if allowed.integer else JsonNumber

    def to_internal_value(self: serializers.Field, data: Any) -> Any:
        value = base.to_internal_value(self, data)
        if not allowed.contains(value):
            raise serializers.ValidationError(f"Ensure this value is {allowed.describe()}.")
        return value

    field_class = type(f"Sampling_{name}", (base,), {"to_internal_value": to_internal_value, "allowed": allowed})
    return extend_schema_field(_schema(allowed))(field_class)(help_text=allowed.help, **kwargs)


def _schema(allowed: Range) -> dict[str, Any]:
    schema = allowed.json_schema()
    if not allowed.integer:
        schema["format"] = "double"
    # Swagger UI fills "Try it out" from the example, else from a bound: 2**63 - 1 (a seed's maximum) is
    # rounded by JavaScript to 2**63, and its own request is refused. Such a field gets its lower bound (the
    # schema's examples are test inputs for schemathesis too: they must be valid).
    if schema.get("maximum", 0) > JS_SAFE_INTEGER:
        schema["example"] = schema["minimum"]
    return schema
