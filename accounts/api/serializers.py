"""Input and output shapes of the API-key endpoints. No logic here: the views call accounts.services."""

from __future__ import annotations

from rest_framework import serializers

from accounts import api_keys
from accounts.api.fields import Text
from accounts.models import ApiKey


class ApiKeyCreateInputSerializer(serializers.Serializer):
    name = Text(
        max_length=api_keys.NAME_MAX_LENGTH,
        required=False,
        allow_blank=True,
        default="",
        help_text="A label to recognise the key by, like the app or machine that uses it.",
    )


class ApiKeyOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "created_at", "last_used_at"]
        read_only_fields = fields
        extra_kwargs = {
            "prefix": {"help_text": 'The public start of the key ("djn_" + 8 characters), to tell keys apart.'},
            "last_used_at": {"help_text": "When the key last authenticated a request; updated at most once a minute."},
        }


class ApiKeyCreatedOutputSerializer(ApiKeyOutputSerializer):
    key = serializers.CharField(read_only=True, help_text="The whole key. Shown in this response only: store it now.")

    class Meta(ApiKeyOutputSerializer.Meta):
        fields = [*ApiKeyOutputSerializer.Meta.fields, "key"]
        read_only_fields = fields


class ErrorOutputSerializer(serializers.Serializer):
    """DRF's error body for 401, 403 and 404: ``{"detail": "..."}``."""

    detail = serializers.CharField()
