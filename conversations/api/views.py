"""/api/v1: conversations, messages, generation streams (SSE) and usage, for session or API-key users.

One view class per URL, one method per operation: parse the input with its serializer, call a selector
or service scoped to ``request.user``, render with conversations.presenters. Someone else's ids answer
404 exactly like unknown ones. Every error is ``{"detail", "code"}`` JSON (ApiErrorOutputSerializer).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from django.db import transaction
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from accounts.models import User
from conversations import presenters, selectors, services
from conversations.api import serializers as s
from conversations.api.usage import usage_summary
from conversations.errors import ContextTooLong, ConversationError, InvalidInput, LimitReached, NotAllowed, NotFound
from conversations.following import reply_settle
from inference.follow import FollowInterrupted, follow

# How long an SSE stream waits for events (s) before it looks at the database and sends a keep-alive.
EVENTS_QUIET_S = 10.0
RETRY_MS = 3000  # an EventSource whose stream was cut reconnects after this long

ERROR_STATUS: list[tuple[type[ConversationError], int]] = [
    (NotFound, status.HTTP_404_NOT_FOUND),
    (ContextTooLong, status.HTTP_400_BAD_REQUEST),
    (InvalidInput, status.HTTP_400_BAD_REQUEST),
    (NotAllowed, status.HTTP_403_FORBIDDEN),
    (LimitReached, status.HTTP_429_TOO_MANY_REQUESTS),
]


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(s.ApiErrorOutputSerializer, description=description)


UNAUTHENTICATED = _error("No credentials, or not a working API key.")
NOT_FOUND = _error("Not found: unknown, or not yours (the two look the same).")
BAD_INPUT = _error('The request is malformed ("invalid", with field_errors; "parse_error") or not possible.')
SEND_BAD_INPUT = _error(
    'Malformed ("invalid", "parse_error"), an empty message, an unknown model ("model_not_found"), a reply still '
    'being written ("invalid_input"), or a conversation too long for the model ("context_length_exceeded").'
)
FORBIDDEN_WRITE = _error("A session request without its CSRF token, or a user who may not chat yet.")
LIMITED = _error(
    'Over a limit of your plan: "rate_limit_exceeded" (messages in the window, replies at once) or '
    '"insufficient_quota" (the monthly tokens). The Retry-After header says when to try again, in seconds.'
)


def _uuid_path(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.UUID, OpenApiParameter.PATH, description=description)


CONVERSATION_ID = _uuid_path("conversation_id", "A conversation of yours.")
MESSAGE_ID = _uuid_path("message_id", "A message of yours.")
GENERATION_ID = _uuid_path("generation_id", "A reply of yours (an assistant message's id).")


class DjinnApi(APIView):
    """JSON in, JSON out; conversations.errors and DRF's errors become ApiErrorOutputSerializer bodies."""

    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are JSON, whatever renderer content negotiation chose (or failed to choose).
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        for error_class, status_code in ERROR_STATUS:
            if isinstance(exc, error_class):
                response = Response({"detail": exc.message, "code": exc.code}, status=status_code)
                if isinstance(exc, LimitReached):
                    response["Retry-After"] = str(exc.retry_after_s)
                return response
        response = super().handle_exception(exc)
        if isinstance(exc, exceptions.ValidationError):
            field_errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
            response.data = {"detail": _first_message(field_errors), "code": "invalid", "field_errors": field_errors}
        elif isinstance(response.data, dict) and "detail" in response.data:
            detail = response.data["detail"]
            response.data = {"detail": str(detail), "code": getattr(detail, "code", None) or "error"}
        return response


def _first_message(errors: Any, field: str = "") -> str:
    """ "content: This field is required." for {"content": ["This field is required."]}."""
    if isinstance(errors, dict):
        name, value = next(iter(errors.items()))
        return _first_message(value, f"{field}.{name}" if field else str(name))
    if isinstance(errors, list) and errors:
        return _first_message(errors[0], field)
    return f"{field}: {errors}" if field and field != "non_field_errors" else str(errors)


def _valid(serializer_class: type[s.serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _turn(turn: services.Turn) -> dict[str, Any]:
    return {
        "conversation": presenters.conversation_to_dict(turn.conversation),
        "user_message": presenters.message_to_dict(turn.user_message),
        "assistant_message": presenters.message_to_dict(turn.assistant_message),
    }


def _conversation_detail(user: User, conversation_id: Any) -> dict[str, Any]:
    conversation, branch = selectors.conversation_with_branch(user=user, conversation_id=conversation_id)
    return presenters.conversation_to_dict(conversation) | {"messages": presenters.branch_to_list(branch)}


# Conversations ------------------------------------------------------------------------------------------


class ConversationListCreateApi(DjinnApi):
    """Your conversations."""

    @extend_schema(
        operation_id="conversations_list",
        tags=["Conversations"],
        description="Your conversations, pinned first, then the most recently active; `q` searches them.",
        parameters=[s.ConversationListInputSerializer],
        responses={200: s.ConversationPageOutputSerializer, 400: BAD_INPUT, 401: UNAUTHENTICATED},
    )
    def get(self, request: Request) -> Response:
        query = _valid(s.ConversationListInputSerializer, request.query_params)
        page, size = query["page"], query["page_size"]
        conversations = selectors.conversation_list(
            user=request.user, archived=query["archived"], query=query.get("q") or None
        )
        rows = list(conversations[(page - 1) * size : page * size + 1])  # one more: is there a next page?
        url = request.build_absolute_uri()
        previous = None
        if page > 1:
            previous = remove_query_param(url, "page") if page == 2 else replace_query_param(url, "page", page - 1)
        return Response(
            {
                "results": [presenters.conversation_to_dict(conversation) for conversation in rows[:size]],
                "next": replace_query_param(url, "page", page + 1) if len(rows) > size else None,
                "previous": previous,
            }
        )

    @extend_schema(
        operation_id="conversations_create",
        tags=["Conversations"],
        description="Start a conversation with its first message; the reply is queued at once.",
        request=s.ConversationCreateInputSerializer,
        responses={
            201: s.TurnOutputSerializer,
            400: SEND_BAD_INPUT,
            401: UNAUTHENTICATED,
            403: FORBIDDEN_WRITE,
            429: LIMITED,
        },
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.ConversationCreateInputSerializer, request.data)
        turn = services.message_send(user=request.user, conversation_id=None, parent_id=None, **data)
        return Response(_turn(turn), status=status.HTTP_201_CREATED)


class ConversationDetailApi(DjinnApi):
    """One conversation of yours."""

    @extend_schema(
        operation_id="conversations_retrieve",
        tags=["Conversations"],
        description="The conversation with its shown branch, root first, and each message's siblings.",
        parameters=[CONVERSATION_ID],
        responses={200: s.ConversationDetailOutputSerializer, 401: UNAUTHENTICATED, 404: NOT_FOUND},
    )
    def get(self, request: Request, conversation_id: str) -> Response:
        return Response(_conversation_detail(request.user, conversation_id))

    @extend_schema(
        operation_id="conversations_update",
        tags=["Conversations"],
        description="Rename, pin, archive or set the system prompt; fields left out stay as they are.",
        parameters=[CONVERSATION_ID],
        request=s.ConversationUpdateInputSerializer,
        responses={
            200: s.ConversationOutputSerializer,
            400: BAD_INPUT,
            401: UNAUTHENTICATED,
            403: FORBIDDEN_WRITE,
            404: NOT_FOUND,
        },
    )
    def patch(self, request: Request, conversation_id: str) -> Response:
        data = _valid(s.ConversationUpdateInputSerializer, request.data)
        user = request.user
        with transaction.atomic():  # all the changes or none
            conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
            if "title" in data:
                conversation = services.conversation_rename(
                    user=user, conversation_id=conversation.pk, title=data["title"]
                )
            if "pinned" in data:
                conversation = services.conversation_set_pinned(
                    user=user, conversation_id=conversation.pk, pinned=data["pinned"]
                )
            if "archived" in data:
                conversation = services.conversation_set_archived(
                    user=user, conversation_id=conversation.pk, archived=data["archived"]
                )
            if "system_prompt" in data:
                conversation = services.conversation_set_system_prompt(
                    user=user, conversation_id=conversation.pk, system_prompt=data["system_prompt"]
                )
        return Response(presenters.conversation_to_dict(conversation))

    @extend_schema(
        operation_id="conversations_destroy",
        tags=["Conversations"],
        description="Delete the conversation and all its messages; replies still being written are stopped.",
        parameters=[CONVERSATION_ID],
        request=None,
        responses={
            204: OpenApiResponse(description="Deleted."),
            401: UNAUTHENTICATED,
            403: FORBIDDEN_WRITE,
            404: NOT_FOUND,
        },
    )
    def delete(self, request: Request, conversation_id: str) -> Response:
        services.conversation_delete(user=request.user, conversation_id=conversation_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Messages -----------------------------------------------------------------------------------------------

TURN_RESPONSES = {
    201: s.TurnOutputSerializer,
    400: SEND_BAD_INPUT,
    429: LIMITED,
    401: UNAUTHENTICATED,
    403: FORBIDDEN_WRITE,
    404: NOT_FOUND,
}


class MessageSendApi(DjinnApi):
    """A new message in a conversation."""

    @extend_schema(
        operation_id="messages_send",
        tags=["Messages"],
        description="Add a message (after the current leaf, or after `parent`) and queue its reply.",
        parameters=[CONVERSATION_ID],
        request=s.MessageSendInputSerializer,
        responses=TURN_RESPONSES,
    )
    def post(self, request: Request, conversation_id: str) -> Response:
        data = _valid(s.MessageSendInputSerializer, request.data)
        turn = services.message_send(
            user=request.user, conversation_id=conversation_id, parent_id=data.pop("parent", None), **data
        )
        return Response(_turn(turn), status=status.HTTP_201_CREATED)


class MessageRegenerateApi(DjinnApi):
    """Another reply to the same question."""

    @extend_schema(
        operation_id="messages_regenerate",
        tags=["Messages"],
        description="A new reply beside this finished reply (same question and parameters), shown from now on.",
        parameters=[MESSAGE_ID],
        request=None,
        responses=TURN_RESPONSES,
    )
    def post(self, request: Request, message_id: str) -> Response:
        turn = services.message_regenerate(user=request.user, message_id=message_id)
        return Response(_turn(turn), status=status.HTTP_201_CREATED)


class MessageContinueApi(DjinnApi):
    """More of a reply that stopped at its length limit."""

    @extend_schema(
        operation_id="messages_continue",
        tags=["Messages"],
        description="Write on where this reply stopped at its length limit (`finish_reason` `length`): a reply to "
        "it, with its parameters, that continues its text (the model reads the two as one reply). "
        "`user_message` in the answer is the reply continued.",
        parameters=[MESSAGE_ID],
        request=None,
        responses=TURN_RESPONSES,
    )
    def post(self, request: Request, message_id: str) -> Response:
        turn = services.message_continue(user=request.user, message_id=message_id)
        return Response(_turn(turn), status=status.HTTP_201_CREATED)


class MessageEditApi(DjinnApi):
    """An edited question, as a new branch."""

    @extend_schema(
        operation_id="messages_edit",
        tags=["Messages"],
        description="A new user message beside this one, with a queued reply: a new branch, shown from now on.",
        parameters=[MESSAGE_ID],
        request=s.MessageEditInputSerializer,
        responses=TURN_RESPONSES,
    )
    def post(self, request: Request, message_id: str) -> Response:
        data = _valid(s.MessageEditInputSerializer, request.data)
        turn = services.message_edit(user=request.user, message_id=message_id, content=data["content"])
        return Response(_turn(turn), status=status.HTTP_201_CREATED)


class MessageSwitchBranchApi(DjinnApi):
    """Which branch of the conversation is shown."""

    @extend_schema(
        operation_id="messages_switch_branch",
        tags=["Messages"],
        description="Show the branch through this message, down to its newest leaf; returns the conversation.",
        parameters=[MESSAGE_ID],
        request=None,
        responses={
            200: s.ConversationDetailOutputSerializer,
            401: UNAUTHENTICATED,
            403: FORBIDDEN_WRITE,
            404: NOT_FOUND,
        },
    )
    def post(self, request: Request, message_id: str) -> Response:
        conversation = services.conversation_switch_branch(user=request.user, message_id=message_id)
        return Response(_conversation_detail(request.user, conversation.pk))


# Generations --------------------------------------------------------------------------------------------


class GenerationCancelApi(DjinnApi):
    """Stop a reply being written."""

    @extend_schema(
        operation_id="generations_cancel",
        tags=["Generations"],
        description=(
            "Stop a reply. Its worker stops within one engine step and keeps the partial text; the stream ends "
            "with a done event whose finish_reason is cancelled. A finished reply is left as it is. Returns the "
            "reply as it is now."
        ),
        parameters=[GENERATION_ID],
        request=None,
        responses={
            202: s.MessageOutputSerializer,
            401: UNAUTHENTICATED,
            403: FORBIDDEN_WRITE,
            404: NOT_FOUND,
        },
    )
    def post(self, request: Request, generation_id: str) -> Response:
        services.generation_cancel(user=request.user, message_id=generation_id)
        message = selectors.generation_get(user=request.user, generation_id=generation_id)
        return Response(presenters.message_to_dict(message), status=status.HTTP_202_ACCEPTED)


class GenerationEventsApi(DjinnApi):
    """Follow a reply as it is written."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        # Whatever the Accept header says (EventSource sends text/event-stream): the events go out as a
        # StreamingHttpResponse, and errors as JSON.
        return JSONRenderer(), JSONRenderer.media_type

    @extend_schema(
        operation_id="generations_events",
        tags=["Generations"],
        description=(
            "The reply's events as Server-Sent Events, after seq `after` (or the Last-Event-ID header, which "
            "wins): `id: <seq>`, `event: delta|done|error`, `data: <JSON>`. Resuming after the last seq you have "
            "gives exactly the missing events. The stream ends after the done or error event; lines starting "
            "with `:` are keep-alives. A stream that ends without a done or error event was cut (the server "
            "lost Redis, or restarted): reconnect with Last-Event-ID, as an EventSource does by itself."
        ),
        parameters=[
            GENERATION_ID,
            s.GenerationEventsInputSerializer,
            OpenApiParameter(
                "Last-Event-ID",
                {"type": "integer", "minimum": 0, "maximum": s.MAX_AFTER},
                OpenApiParameter.HEADER,
                description="The last seq you have (an EventSource sends it when it reconnects).",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                s.GenerationEventOutputSerializer, description="The event stream; the schema is one event's."
            ),
            (400, "application/json"): BAD_INPUT,
            (401, "application/json"): UNAUTHENTICATED,
            (404, "application/json"): NOT_FOUND,
        },
    )
    def get(self, request: Request, generation_id: str) -> StreamingHttpResponse:
        after = _valid(s.GenerationEventsInputSerializer, request.query_params)["after"]
        last_event_id = request.headers.get("Last-Event-ID")
        if last_event_id is not None:
            after = _valid(s.GenerationEventsInputSerializer, {"after": last_event_id.strip()})["after"]
        # The ownership check, before any XREAD.
        message = selectors.generation_get(user=request.user, generation_id=generation_id)
        response = StreamingHttpResponse(
            _event_stream(request.user, str(message.pk), after), content_type="text/event-stream; charset=utf-8"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass each event on as it comes
        return response


def _sse(event: dict[str, Any]) -> bytes:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _event_stream(user: User, generation_id: str, after: int) -> AsyncIterator[bytes]:
    """Events with seq > ``after`` until the terminal one, on the event loop; a client that goes away cancels
    it (Django's ASGI handler watches for the disconnect). If Redis cannot be read for long, the stream ends
    without a terminal event: an EventSource reconnects by itself (after RETRY_MS) with Last-Event-ID."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    try:
        async for batch in follow({generation_id: after}, settle=reply_settle(user), quiet_s=EVENTS_QUIET_S):
            if not batch:
                yield b": keep-alive\n\n"
                continue
            yield b"".join(_sse(event) for event in batch)
    except FollowInterrupted:
        yield b": interrupted, reconnect with Last-Event-ID\n\n"


# Usage --------------------------------------------------------------------------------------------------


class UsageApi(DjinnApi):
    """What you have used."""

    @extend_schema(
        operation_id="usage_retrieve",
        tags=["Usage"],
        description=(
            "Your generations (chat replies and /v1 completions) and their tokens over the last `days` days "
            "(UTC), in total and per day."
        ),
        parameters=[s.UsageInputSerializer],
        responses={200: s.UsageOutputSerializer, 400: BAD_INPUT, 401: UNAUTHENTICATED},
    )
    def get(self, request: Request) -> Response:
        days = _valid(s.UsageInputSerializer, request.query_params)["days"]
        return Response(usage_summary(user=request.user, days=days))
