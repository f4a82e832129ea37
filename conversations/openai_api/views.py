"""/v1 views: async, so an open stream costs the web process a coroutine and a Redis read, not a thread.

Each view authenticates the API key (``Authorization: Bearer djn_...``; cookies are never looked at, so
CSRF does not apply), validates, calls conversations.completions and renders OpenAI's format. Whatever
goes wrong answers OpenAI's error JSON, never a Django page.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed

from accounts.authentication import INVALID_API_KEY, ApiKeyAuthentication
from accounts.billing.quotas import Limits
from accounts.models import ApiKey, User
from config.errors import UNAVAILABLE_ERRORS, unavailable_response
from conversations import limits
from conversations.completions import StartedCompletion, completion_start, read_logprobs
from conversations.errors import ContextTooLong, InvalidInput, LimitReached, NotAllowed
from conversations.generations import completion_charge_streamed
from conversations.openai_api import responses
from conversations.openai_api.errors import SERVER_ERROR, OpenAIError
from conversations.openai_api.streaming import GENERATION_LOST, WORKER_STOPPED, choice_events
from conversations.openai_api.validation import ChatRequest, parse_chat_request
from inference.engine import EngineError
from inference.faults import release_connection
from inference.models import LLMModel
from inference.registry import model_list_enabled

logger = logging.getLogger(__name__)

NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY). You can create keys in your Djinn settings, under API keys."
)
SERVER_FAULT = "The server had an error while processing your request. Sorry about that!"
KEEP_ALIVE_S = 15  # a quiet stream (queued, or a model loading) sends an SSE comment this often, for proxies

View = Callable[..., Awaitable[HttpResponse]]


def openai_view(*methods: str) -> Callable[[View], View]:
    """Allow only ``methods`` (else 405), render OpenAIError and any unexpected failure as OpenAI's error
    JSON, and add ``openai-processing-ms`` (for a stream: until its headers)."""

    def decorator(view: View) -> View:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            started = time.monotonic()
            try:
                if request.method not in methods:
                    raise OpenAIError(
                        f"Method {request.method} is not allowed for {request.path}. Use {' or '.join(methods)}.",
                        status=405,
                        code="method_not_allowed",
                    )
                response = await view(request, *args, **kwargs)
                await _add_rate_headers(request, response)
            except OpenAIError as exc:
                response = exc.response()
                if exc.status == 405:
                    response["Allow"] = ", ".join(methods)
                if exc.retry_after_s is not None:
                    response["Retry-After"] = str(exc.retry_after_s)
                await _add_rate_headers(request, response)
            except UNAVAILABLE_ERRORS as exc:
                # PostgreSQL or Redis out of reach: a 503 to retry (the SDK retries it by itself).
                logger.warning("Service unavailable for %s %s: %s", request.method, request.path, exc)
                response = unavailable_response(request)
            except Exception:
                # The last line of defence: under /v1 a fault is still OpenAI's JSON, never Django's page.
                logger.exception("Unexpected error in %s %s", request.method, request.path)
                response = OpenAIError(SERVER_FAULT, status=500, type=SERVER_ERROR).response()
            response["openai-processing-ms"] = str(round((time.monotonic() - started) * 1000))
            return response

        return csrf_exempt(wrapper)

    return decorator


@openai_view("GET")
async def models(request: HttpRequest) -> HttpResponse:
    await _authenticate(request)
    plan = request.djinn_limits  # type: ignore[attr-defined]
    found = [model async for model in model_list_enabled() if plan.allows_model(model.name)]
    return JsonResponse(responses.model_list(found))


@openai_view("GET")
async def model(request: HttpRequest, model_id: str) -> HttpResponse:
    await _authenticate(request)
    plan = request.djinn_limits  # type: ignore[attr-defined]
    found = await model_list_enabled().filter(name=model_id).afirst()
    if found is None or not plan.allows_model(found.name):
        raise _model_not_found(model_id)
    return JsonResponse(responses.model_object(found))


@openai_view("POST")
async def chat_completions(request: HttpRequest) -> HttpResponse:
    user, api_key = await _authenticate(request)
    chat = parse_chat_request(_json_body(request))
    started = await _start(user, api_key, chat, request.djinn_limits)  # type: ignore[attr-defined]
    completion = responses.Completion(
        id=f"chatcmpl-{started.generation_ids[0].hex}",
        model=started.model,
        created=started.created,
        choices=[responses.Choice(index) for index in range(len(started.generation_ids))],
        logprobs=chat.logprobs,
    )
    charge = _LostCharge(user.pk, api_key.pk, started)
    if chat.stream:
        response = StreamingHttpResponse(
            _sse(completion, started.generation_ids, chat, charge), content_type="text/event-stream; charset=utf-8"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass each chunk on at once
        return response
    await _collect(completion, started.generation_ids, charge)
    return JsonResponse(completion.object())


@csrf_exempt
async def not_found(request: HttpRequest) -> HttpResponse:
    return OpenAIError(f"Invalid URL ({request.method} {request.path})", status=404).response()


# -- helpers -------------------------------------------------------------------------------------------


async def _authenticate(request: HttpRequest) -> tuple[User, ApiKey]:
    """The key's user and key; the user's plan limits are kept on the request (``djinn_limits``), read in the
    same trip to a thread, for the view and the x-ratelimit-* headers."""
    user, api_key = await sync_to_async(_authenticate_key)(request)
    request.djinn_api_user = user  # type: ignore[attr-defined]
    return user, api_key


async def _add_rate_headers(request: HttpRequest, response: HttpResponse) -> None:
    """OpenAI's x-ratelimit-* headers on every answer to a known key: the plan's API requests and tokens per
    minute, what is left of them now, and when each is whole again. A limit the plan does not set is left out."""
    user = getattr(request, "djinn_api_user", None)
    if user is None:
        return
    try:
        headers = await sync_to_async(limits.rate_headers)(user.pk, request.djinn_limits)  # type: ignore[attr-defined]
        for name, value in headers.items():
            response[name] = value
    except UNAVAILABLE_ERRORS:
        logger.warning("No x-ratelimit headers: Redis or PostgreSQL is away")


def _authenticate_key(request: HttpRequest) -> tuple[User, ApiKey]:
    try:
        result = ApiKeyAuthentication().authenticate(request)  # reads only the Authorization header
    except AuthenticationFailed as exc:
        raise OpenAIError(str(exc.detail), status=401, code=INVALID_API_KEY) from None
    if result is None:
        raise OpenAIError(NO_KEY, status=401, code=INVALID_API_KEY)
    release_connection()  # the limits may take a trip to Redis
    request.djinn_limits = limits.limits_of(result[0].pk)  # type: ignore[attr-defined]
    return result


def _json_body(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body)
    except RequestDataTooBig:
        raise OpenAIError("The request body is too large.", status=413, code="request_too_large") from None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        raise OpenAIError(
            "We could not parse the JSON body of your request. The API expects a JSON payload.",
            code="invalid_json",
        ) from None


async def _start(user: User, api_key: ApiKey, chat: ChatRequest, request_limits: Limits) -> StartedCompletion:
    try:
        return await sync_to_async(completion_start)(
            user=user,
            api_key_id=api_key.pk,
            request=chat.completion,
            plan=request_limits,
        )
    except LLMModel.DoesNotExist:
        raise _model_not_found(chat.completion.model) from None
    except ContextTooLong as exc:
        raise OpenAIError(exc.message, param="messages", code=ContextTooLong.code) from None
    except NotAllowed as exc:
        raise OpenAIError(exc.message, status=403, code="not_allowed") from None
    except LimitReached as exc:
        raise OpenAIError(
            exc.message,
            status=429,
            type="insufficient_quota" if exc.code == "insufficient_quota" else "requests",
            code=exc.code,
            retry_after_s=exc.retry_after_s,
        ) from None
    except InvalidInput as exc:
        raise OpenAIError(exc.message, code="invalid_value") from None
    except EngineError:
        logger.exception("Could not read model %s", chat.completion.model)
        raise OpenAIError(
            "The model is unavailable right now. Try again later.", status=503, type=SERVER_ERROR
        ) from None


def _model_not_found(name: str) -> OpenAIError:
    return OpenAIError(
        f"The model '{name}' does not exist or you do not have access to it.",
        status=404,
        param="model",
        code="model_not_found",
    )


def _stream_error(event: dict[str, Any]) -> OpenAIError:
    """The OpenAIError an ``error`` event of a generation stream stands for."""
    code = event.get("code")
    message = event.get("message") or SERVER_FAULT
    if code == ContextTooLong.code:
        return OpenAIError(message, param="messages", code=code)
    if code == "model_not_found":
        return OpenAIError(message, status=404, param="model", code=code)
    if code == InvalidInput.code:
        return OpenAIError(message, code="invalid_value")
    if code == GENERATION_LOST:
        return OpenAIError(message, status=503, type=SERVER_ERROR, code=code)
    return OpenAIError(message, status=500, type=SERVER_ERROR, code=code)


async def _logprobs_of(
    generation_ids: list[UUID], batch: list[tuple[int, dict[str, Any]]]
) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """The logprob entries of the batch's deltas, by (choice, seq)."""
    found: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for index in {index for index, _event in batch}:
        seqs = [event["seq"] for i, event in batch if i == index and event["type"] == "delta"]
        for seq, entries in (await read_logprobs(generation_ids[index], seqs)).items():
            found[index, seq] = entries
    return found


class _LostCharge:
    """Charges a choice whose worker died mid-way for what it had streamed (``generation_lost`` with
    WORKER_STOPPED: the worker's heartbeat stopped; nobody else will record its usage until a redelivery)."""

    def __init__(self, user_id: int, api_key_id: int, started: StartedCompletion) -> None:
        self.request = {
            "user_id": user_id,
            "api_key_id": api_key_id,
            "model": started.model,
            "prompt_tokens": started.prompt_tokens,
        }

    async def __call__(self, generation_id: UUID, event: dict[str, Any]) -> None:
        if event.get("code") == GENERATION_LOST and event.get("message") == WORKER_STOPPED:
            try:
                await sync_to_async(completion_charge_streamed)(generation_id, self.request)
            except UNAVAILABLE_ERRORS:
                logger.warning("Could not charge lost completion %s now", generation_id)


async def _collect(completion: responses.Completion, generation_ids: list[UUID], charge: _LostCharge) -> None:
    """Read every choice to its end into ``completion``. Raises OpenAIError for a failed generation."""
    async with aclosing(choice_events(generation_ids, user_id=charge.request["user_id"])) as batches:
        async for batch in batches:
            logprobs = await _logprobs_of(generation_ids, batch) if completion.logprobs else {}
            for index, event in batch:
                choice = completion.choices[index]
                if event["type"] == "delta":
                    choice.text.append(event["text"])
                    choice.logprobs += logprobs.get((index, event["seq"]), [])
                elif event["type"] == "done":
                    choice.finish_reason = event["finish_reason"]
                    choice.usage = event["usage"]
                else:
                    await charge(generation_ids[index], event)
                    raise _stream_error(event)


async def _sse(
    completion: responses.Completion, generation_ids: list[UUID], chat: ChatRequest, charge: _LostCharge
) -> AsyncIterator[str]:
    """The chunks of a streamed completion. Leaving early (the client went away: Django cancels this
    iterator) cancels the generations still running, through choice_events."""
    usage_field = chat.include_usage
    last_write = time.monotonic()
    for choice in completion.choices:
        yield completion.chunk(choice.index, {"role": "assistant", "content": ""}, with_usage_field=usage_field)
    try:
        async with aclosing(choice_events(generation_ids, user_id=charge.request["user_id"])) as batches:
            async for batch in batches:
                if not batch:
                    if time.monotonic() - last_write >= KEEP_ALIVE_S:
                        last_write = time.monotonic()
                        yield responses.KEEP_ALIVE
                    continue
                last_write = time.monotonic()
                logprobs = await _logprobs_of(generation_ids, batch) if chat.logprobs else {}
                # A batch's chunks go out in one write (one ASGI message, one socket send).
                chunks = []
                for index, event in batch:
                    if event["type"] == "delta":
                        entries = logprobs.get((index, event["seq"]), []) if chat.logprobs else None
                        delta = {"content": event["text"]}
                        chunks.append(completion.chunk(index, delta, logprobs=entries, with_usage_field=usage_field))
                    elif event["type"] == "done":
                        completion.choices[index].usage = event["usage"]
                        reason = event["finish_reason"]
                        chunks.append(completion.chunk(index, {}, finish_reason=reason, with_usage_field=usage_field))
                    else:
                        await charge(generation_ids[index], event)
                        yield "".join(chunks) + responses.sse(_stream_error(event).body())
                        return
                yield "".join(chunks)
    except Exception:
        # The status line is long gone: end the stream with an error the SDK raises, not a cut connection.
        logger.exception("Streaming completion %s failed", completion.id)
        yield responses.sse(OpenAIError(SERVER_FAULT, status=500, type=SERVER_ERROR).body())
        return
    if chat.include_usage:
        yield completion.usage_chunk()
    yield responses.DONE
