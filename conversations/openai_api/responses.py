"""The objects /v1 answers with, in OpenAI's wire format: models, chat.completion, chat.completion.chunk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from inference.models import LLMModel

OWNED_BY = "djinn"


def model_object(model: LLMModel) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": int(model.created.timestamp()), "owned_by": OWNED_BY}


def model_list(models: list[LLMModel]) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(model) for model in models]}


def usage_object(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


@dataclass
class Choice:
    """One choice as it builds up from its stream's events."""

    index: int
    text: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, int] | None = None


@dataclass
class Completion:
    """What the response says about the request as a whole: its id, model, time and choices."""

    id: str
    model: str
    created: int
    choices: list[Choice]
    logprobs: bool = False

    def usage(self) -> dict[str, Any]:
        """OpenAI's usage: the prompt counted once (every choice reads the same one), completions summed."""
        first = self.choices[0].usage or {}
        return usage_object(
            first.get("prompt_tokens", 0),
            sum((choice.usage or {}).get("completion_tokens", 0) for choice in self.choices),
            first.get("cached_tokens", 0),
        )

    def object(self) -> dict[str, Any]:
        """The whole ``chat.completion`` (non-streaming)."""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": choice.index,
                    "message": {"role": "assistant", "content": "".join(choice.text), "refusal": None},
                    "logprobs": {"content": choice.logprobs, "refusal": None} if self.logprobs else None,
                    "finish_reason": choice.finish_reason,
                }
                for choice in self.choices
            ],
            "usage": self.usage(),
        }

    def chunk(
        self,
        index: int,
        delta: dict[str, Any],
        *,
        finish_reason: str | None = None,
        logprobs: list[dict[str, Any]] | None = None,
        with_usage_field: bool = False,
    ) -> str:
        """One ``chat.completion.chunk`` for choice ``index``, as an SSE event."""
        choice = {
            "index": index,
            "delta": delta,
            "logprobs": {"content": logprobs, "refusal": None} if logprobs is not None else None,
            "finish_reason": finish_reason,
        }
        return sse(self._chunk([choice], usage=None, with_usage_field=with_usage_field))

    def usage_chunk(self) -> str:
        """The last chunk when the client asked for usage: no choices, the usage of the whole request."""
        return sse(self._chunk([], usage=self.usage(), with_usage_field=True))

    def _chunk(self, choices: list[dict[str, Any]], *, usage: Any, with_usage_field: bool) -> dict[str, Any]:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if with_usage_field:
            chunk["usage"] = usage  # null on every chunk but the last when include_usage, as OpenAI does
        return chunk


def sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, separators=(',', ':'))}\n\n"


DONE = sse("[DONE]")
KEEP_ALIVE = ": keep-alive\n\n"
