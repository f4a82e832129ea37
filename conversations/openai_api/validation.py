"""A ``POST /v1/chat/completions`` body, checked the way OpenAI checks it, as a CompletionRequest.

Every parameter OpenAI documents is either supported, accepted and ignored where it changes nothing
here (``user``, ``metadata``, ``service_tier``...), or refused with a 400 whose ``param`` names it. A
parameter nobody documents is refused too, as OpenAI does, except vLLM's sampling extras that Djinn's
engine supports (``top_k``, ``min_p``, ``repetition_penalty``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conversations.completions import CompletionRequest
from conversations.openai_api.errors import OpenAIError, invalid_type, invalid_value, missing, unsupported
from inference.engine import SAMPLING_RANGES, Range

MAX_CHOICES = 8
# The sampling parameters /v1 takes, with the engine's ranges (their one definition) narrowed to OpenAI's.
# Two values the engine has no word for are translated before it sees them: top_p 0 (OpenAI: only the
# likeliest token) is greedy, and top_k -1 (vLLM: off) is 0.
RANGES: dict[str, Range] = {
    "max_tokens": SAMPLING_RANGES["max_tokens"],
    "temperature": SAMPLING_RANGES["temperature"].narrowed(high=2.0, help="0 is greedy."),
    "top_p": Range(False, 0.0, 1.0, help="Nucleus sampling; 0 keeps only the likeliest token (greedy)."),
    "seed": SAMPLING_RANGES["seed"],
    "presence_penalty": SAMPLING_RANGES["presence_penalty"],
    "frequency_penalty": SAMPLING_RANGES["frequency_penalty"],
    "top_logprobs": SAMPLING_RANGES["top_logprobs"],
    "top_k": Range(True, -1, None, help="vLLM extra: only the k likeliest tokens; 0 or -1 is off."),
    "min_p": SAMPLING_RANGES["min_p"].narrowed(help="vLLM extra; 0 is off."),
    "repetition_penalty": SAMPLING_RANGES["repetition_penalty"].narrowed(help="vLLM extra; 1 is off."),
}
MAX_STOP_SEQUENCES = 16
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

# Accepted and ignored: they ask for nothing this server would do differently.
IGNORED = {"user", "metadata", "service_tier", "parallel_tool_calls", "prompt_cache_key", "safety_identifier"}
# Refused unless absent, null, or the value that means "nothing special".
UNSUPPORTED = {
    "tools": None,
    "tool_choice": "none",
    "functions": None,
    "function_call": "none",
    "response_format": {"type": "text"},
    "audio": None,
    "modalities": ["text"],
    "logit_bias": {},
    "prediction": None,
    "web_search_options": None,
    "reasoning_effort": None,
    "verbosity": None,
    "store": False,
}
KNOWN = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "logprobs",
    "top_logprobs",
    "top_k",
    "min_p",
    "repetition_penalty",
    *IGNORED,
    *UNSUPPORTED,
}


@dataclass(frozen=True)
class ChatRequest:
    completion: CompletionRequest
    stream: bool
    include_usage: bool
    logprobs: bool


def parse_chat_request(body: object) -> ChatRequest:
    """Raises OpenAIError (400) naming the first parameter that is wrong."""
    if not isinstance(body, dict):
        raise OpenAIError("The request body must be a JSON object.")
    for key in body:
        if key not in KNOWN:
            raise OpenAIError(f"Unrecognized request argument supplied: {key}", param=key, code="unknown_parameter")
    for key, harmless in UNSUPPORTED.items():
        value = body.get(key)
        if value is not None and value != harmless:
            raise unsupported(key)

    model = body.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str):
        raise invalid_type("model", "a string", model)
    messages = _messages(body.get("messages"))

    stream = _bool(body, "stream")
    include_usage = _stream_options(body.get("stream_options"), stream)
    logprobs = _bool(body, "logprobs")
    top_logprobs = _param(body, "top_logprobs")
    if top_logprobs is not None and not logprobs:
        raise invalid_value("top_logprobs", "'top_logprobs' requires 'logprobs' to be true.")

    params: dict[str, Any] = {
        "max_tokens": _param(body, "max_completion_tokens", "max_tokens") or _param(body, "max_tokens"),
        "temperature": _param(body, "temperature"),
        "top_p": _param(body, "top_p"),
        "stop": _stop(body.get("stop")),
        "seed": _param(body, "seed"),
        "presence_penalty": _param(body, "presence_penalty"),
        "frequency_penalty": _param(body, "frequency_penalty"),
        "top_k": _param(body, "top_k"),
        "min_p": _param(body, "min_p"),
        "repetition_penalty": _param(body, "repetition_penalty"),
    }
    if params["top_k"] == -1:
        params["top_k"] = 0
    if params["top_p"] == 0.0:
        # OpenAI accepts top_p 0 (only the likeliest token); the engine wants (0, 1]: the same thing is greedy.
        params["top_p"] = None
        params["temperature"] = 0.0
    if logprobs:
        params["logprobs"] = True
        params["top_logprobs"] = top_logprobs or 0
    n = _int(body, "n", Range(True, 1, MAX_CHOICES))
    completion = CompletionRequest(
        model=model,
        messages=messages,
        params={key: value for key, value in params.items() if value is not None},
        n=n or 1,
    )
    return ChatRequest(completion=completion, stream=stream, include_usage=include_usage, logprobs=logprobs)


def _messages(value: object) -> list[dict[str, str]]:
    if value is None:
        raise missing("messages")
    if not isinstance(value, list):
        raise invalid_type("messages", "an array", value)
    if not value:
        raise invalid_value("messages", "'messages' must contain at least one message.")
    return [_message(message, f"messages[{i}]") for i, message in enumerate(value)]


def _message(message: object, where: str) -> dict[str, str]:
    if not isinstance(message, dict):
        raise invalid_type(where, "an object", message)
    role = message.get("role")
    if role is None:
        raise missing(f"{where}.role")
    if not isinstance(role, str):
        raise invalid_type(f"{where}.role", "a string", role)
    if role in {"tool", "function"}:
        raise unsupported(f"{where}.role", f"Messages with role '{role}' are not supported: Djinn has no tools.")
    if role not in ROLES:
        raise invalid_value(
            f"{where}.role", f"Invalid value for '{where}.role': expected one of system, developer, user, assistant."
        )
    for key in ("tool_calls", "function_call", "audio"):
        if message.get(key) is not None:
            raise unsupported(f"{where}.{key}")
    if "content" not in message:
        raise missing(f"{where}.content")
    return {"role": ROLES[role], "content": _content(message["content"], f"{where}.content")}


def _content(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid_type(where, "a string or an array of content parts", content)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise invalid_type(f"{where}[{j}]", "an object", part)
        kind = part.get("type")
        if kind != "text":
            raise unsupported(
                f"{where}[{j}].type", f"Content parts of type {kind!r} are not supported: only 'text' parts are."
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid_type(f"{where}[{j}].text", "a string", text)
        texts.append(text)
    return "\n".join(texts)


def _stream_options(value: object, stream: bool) -> bool:
    if value is None:
        return False
    if not stream:
        raise invalid_value("stream_options", "'stream_options' is only allowed when 'stream' is true.")
    if not isinstance(value, dict):
        raise invalid_type("stream_options", "an object", value)
    for key in value:
        if key not in {"include_usage", "include_obfuscation"}:
            raise OpenAIError(
                f"Unrecognized stream option: {key}", param=f"stream_options.{key}", code="unknown_parameter"
            )
    include_usage = value.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise invalid_type("stream_options.include_usage", "a boolean", include_usage)
    return bool(include_usage)


def _stop(value: object) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid_type("stop", "a string or an array of strings", value)
    if len(stops) > MAX_STOP_SEQUENCES:
        raise invalid_value("stop", f"'stop' may hold at most {MAX_STOP_SEQUENCES} sequences.")
    return [s for s in stops if s] or None


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise invalid_type(key, "a boolean", value)
    return bool(value)


def _param(body: dict[str, Any], key: str, range_of: str | None = None) -> Any:
    """Sampling parameter ``key`` of the body (None when absent), checked against RANGES[range_of or key]."""
    allowed = RANGES[range_of or key]
    return _int(body, key, allowed) if allowed.integer else _number(body, key, allowed)


def _int(body: dict[str, Any], key: str, allowed: Range) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_type(key, "an integer", value)
    if not allowed.contains(value):
        raise invalid_value(key, f"Invalid '{key}': {value}. It must be {allowed.describe()}.")
    return value


def _number(body: dict[str, Any], key: str, allowed: Range) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise invalid_type(key, "a decimal", value)
    if not allowed.contains(value):
        raise invalid_value(key, f"Invalid '{key}': {value}. It must be {allowed.describe()}.")
    return float(value)
