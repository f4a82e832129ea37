"""Input and output shapes of /api/v1 (conversations, messages, generations, usage). No logic here.

Input serializers check the shape of a request, exactly as the schema states it (so a request the
schema allows is never refused for its shape); the services check the rest (an empty message, a
conversation too long for its model) and raise conversations.errors. Output serializers document the
dicts of conversations.presenters, which is what the views send.
"""

from __future__ import annotations

from rest_framework import serializers

from accounts.api.fields import (
    JsonBoolean,
    JsonUUID,
    QueryBoolean,
    QueryInteger,
    Text,
)
from conversations import services
from conversations.api.sampling import sampling_field
from conversations.models import Message

MAX_SEED = 2**63 - 1
MAX_AFTER = 2**63 - 1  # a Redis stream id's sequence part is 64 bits
MAX_STOP_STRINGS = 8
MAX_PAGE = 100_000  # keeps OFFSET far from PostgreSQL's limits
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
MAX_USAGE_DAYS = 366


# Errors -------------------------------------------------------------------------------------------------


class ApiErrorOutputSerializer(serializers.Serializer):
    """Every error of these endpoints: a message for people, a stable code for programs, and for a request
    of the wrong shape, the messages per field."""

    detail = serializers.CharField(help_text="What went wrong, in a sentence.")
    code = serializers.CharField(
        help_text='Stable error code: "invalid" (see field_errors), "invalid_input", "context_length_exceeded", '
        '"model_not_found", "not_found", "not_allowed", "not_authenticated", "authentication_failed", '
        '"invalid_api_key", "permission_denied", "parse_error", ...'
    )
    field_errors = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text='Only when code is "invalid": field name to its list of messages (a dict for an object).',
    )


# Sampling parameters ------------------------------------------------------------------------------------


class SamplingParamsInputSerializer(serializers.Serializer):
    """Per-request sampling parameters; each one left out takes the model's default. Their ranges are the
    engine's (some narrowed here)."""

    temperature = sampling_field("temperature", required=False)
    top_p = sampling_field("top_p", required=False)
    top_k = sampling_field("top_k", high=1_000_000, required=False)
    min_p = sampling_field("min_p", required=False)
    max_tokens = sampling_field("max_tokens", high=1_000_000, required=False)
    repetition_penalty = sampling_field("repetition_penalty", required=False)
    presence_penalty = sampling_field("presence_penalty", required=False)
    frequency_penalty = sampling_field("frequency_penalty", required=False)
    seed = sampling_field("seed", low=0, high=MAX_SEED, required=False)
    stop = serializers.ListField(
        child=Text(min_length=1, max_length=100),
        required=False,
        max_length=MAX_STOP_STRINGS,
        help_text="The reply ends before the first of these strings.",
    )


# Conversations ------------------------------------------------------------------------------------------


class ConversationListInputSerializer(serializers.Serializer):
    q = Text(
        required=False,
        allow_blank=True,
        max_length=200,
        help_text="Full-text search over titles and messages; each word matches as a prefix, all must match.",
    )
    archived = QueryBoolean(required=False, default=False, help_text="List the archived ones instead.")
    page = QueryInteger(required=False, default=1, min_value=1, max_value=MAX_PAGE)
    page_size = QueryInteger(required=False, default=DEFAULT_PAGE_SIZE, min_value=1, max_value=MAX_PAGE_SIZE)


class ConversationCreateInputSerializer(serializers.Serializer):
    content = Text(max_length=services.MAX_MESSAGE_CHARS, help_text="The first message.")
    model = Text(
        required=False, max_length=100, help_text="A model name from /v1/models; the default model when left out."
    )
    system_prompt = Text(required=False, allow_blank=True, max_length=services.MAX_SYSTEM_PROMPT_CHARS)
    params = SamplingParamsInputSerializer(required=False)


class ConversationUpdateInputSerializer(serializers.Serializer):
    """Any of these; the others stay as they are."""

    title = Text(required=False, max_length=services.MAX_TITLE_CHARS)
    pinned = JsonBoolean(required=False)
    archived = JsonBoolean(required=False)
    system_prompt = Text(required=False, allow_blank=True, max_length=services.MAX_SYSTEM_PROMPT_CHARS)


class ConversationOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField(allow_blank=True)
    title_is_provisional = serializers.BooleanField(
        help_text="Cut from the first message until a title is generated after the first reply."
    )
    model = Text()
    system_prompt = serializers.CharField(allow_blank=True)
    params = serializers.DictField(help_text="The chat's temperature and max_tokens, over the model's defaults.")
    pinned = serializers.BooleanField()
    archived = serializers.BooleanField()
    current_leaf = serializers.UUIDField(allow_null=True, help_text="The last message of the shown branch.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ConversationPageOutputSerializer(serializers.Serializer):
    results = ConversationOutputSerializer(many=True, help_text="Pinned first, then the most recently active.")
    next = serializers.URLField(allow_null=True, help_text="The next page, or null on the last one.")
    previous = serializers.URLField(allow_null=True, help_text="The previous page, or null on the first one.")


# Messages -----------------------------------------------------------------------------------------------


class MessageUsageOutputSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField(min_value=0)
    completion_tokens = serializers.IntegerField(min_value=0)
    cached_tokens = serializers.IntegerField(min_value=0, help_text="Prompt tokens served from the prefix cache.")


class MessageOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(help_text="For a reply, also its generation id.")
    conversation = serializers.UUIDField()
    parent = serializers.UUIDField(allow_null=True)
    role = serializers.ChoiceField(choices=Message.Role.choices)
    content = serializers.CharField(allow_blank=True, help_text="So far, for a reply still being written.")
    seq = serializers.IntegerField(
        min_value=0, help_text="The last stream event that content includes: watch the generation after it."
    )
    status = serializers.ChoiceField(choices=Message.Status.choices)
    finish_reason = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    model = Text(allow_blank=True)
    usage = MessageUsageOutputSerializer()
    ttft_ms = serializers.IntegerField(allow_null=True, help_text="From queueing to the first token, in ms.")
    duration_ms = serializers.IntegerField(allow_null=True, help_text="From start to the last token, in ms.")
    feedback = serializers.IntegerField(allow_null=True, help_text="The user's rating of a reply: 1, -1 or null.")
    created_at = serializers.DateTimeField()


class BranchMessageOutputSerializer(MessageOutputSerializer):
    sibling_index = serializers.IntegerField(min_value=0, help_text="0-based, among its siblings oldest first.")
    sibling_count = serializers.IntegerField(min_value=1)
    sibling_ids = serializers.ListField(child=serializers.UUIDField(), help_text="Oldest first.")


class ConversationDetailOutputSerializer(ConversationOutputSerializer):
    messages = BranchMessageOutputSerializer(many=True, help_text="The shown branch, root first.")


class MessageSendInputSerializer(serializers.Serializer):
    content = Text(max_length=services.MAX_MESSAGE_CHARS)
    parent = JsonUUID(required=False, allow_null=True, help_text="The reply to answer; the current leaf when left out.")
    model = Text(required=False, max_length=100, help_text="Switch the conversation to this model from now on.")
    system_prompt = Text(
        required=False,
        allow_blank=True,
        max_length=services.MAX_SYSTEM_PROMPT_CHARS,
        help_text="Replace the conversation's system prompt from now on.",
    )
    params = SamplingParamsInputSerializer(required=False)


class MessageEditInputSerializer(serializers.Serializer):
    content = Text(max_length=services.MAX_MESSAGE_CHARS, help_text="The new text, as a new branch.")


class TurnOutputSerializer(serializers.Serializer):
    """A new exchange: the user message and its queued reply, whose events stream from
    /api/v1/generations/{assistant_message.id}/events."""

    conversation = ConversationOutputSerializer()
    user_message = MessageOutputSerializer()
    assistant_message = MessageOutputSerializer()


# Generations --------------------------------------------------------------------------------------------


class GenerationEventsInputSerializer(serializers.Serializer):
    after = QueryInteger(
        required=False, default=0, min_value=0, max_value=MAX_AFTER, help_text="The last seq you have."
    )


class GenerationEventOutputSerializer(serializers.Serializer):
    """One Server-Sent Event of a generation's stream."""

    id = serializers.RegexField(r"^[0-9]+$", help_text="The event's seq: resume after it.")
    event = serializers.ChoiceField(choices=["delta", "done", "error"])
    data = serializers.CharField(
        help_text="JSON: {id, seq, type, text, finish_reason, usage, message, code}. delta: text is the next "
        "piece of the reply. done: finish_reason is stop, length or cancelled, and usage is {prompt_tokens, "
        "completion_tokens, cached_tokens} (or null). error: message says what went wrong, code is stable."
    )


# Usage --------------------------------------------------------------------------------------------------


class UsageInputSerializer(serializers.Serializer):
    days = QueryInteger(
        required=False,
        default=30,
        min_value=1,
        max_value=MAX_USAGE_DAYS,
        help_text="How many days back, today included.",
    )


class UsageTotalsOutputSerializer(serializers.Serializer):
    generations = serializers.IntegerField(min_value=0)
    prompt_tokens = serializers.IntegerField(min_value=0)
    completion_tokens = serializers.IntegerField(min_value=0)
    cached_tokens = serializers.IntegerField(min_value=0)


class UsageDayOutputSerializer(UsageTotalsOutputSerializer):
    date = serializers.DateField()


class UsageOutputSerializer(UsageTotalsOutputSerializer):
    start = serializers.DateField(help_text="The first day counted (UTC).")
    end = serializers.DateField(help_text="The last day counted (UTC): today.")
    days = UsageDayOutputSerializer(many=True, help_text="Days with any usage, oldest first.")
