"""The generation stream contract: one Redis stream per generation, read by the WebSocket consumer and
the SSE views, written by the reply task.

Key ``djinn:gen:<id>``. Entries carry explicit ids ``0-<seq>`` with seq = 1, 2, 3..., so "resume after
seq n" is exactly ``XREAD`` from ``0-<n>``: no gap, no duplicate, whoever reads. Each entry has one
field, ``event``, holding JSON::

    {"id": generation id, "seq": n, "type": "delta" | "done" | "error", "text": str,
     "finish_reason": str | None, "usage": {...} | None, "message": str | None, "code": str | None}

``done`` and ``error`` are terminal: a reader stops at the first one. A stream expires an hour after its
last write. Beside it live two small keys: the cancel flag and the worker's liveness heartbeat.

This module writes and reads one stream at a time. The inference worker writes its deltas through
``inference.stream_batching`` (every generation's deltas of an engine step in one transaction), and the
web process follows its streams through ``inference.stream_hub`` (one XREAD for all of them); both keep
this contract.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import redis

from inference.redis import get_async_redis, get_redis

STREAM_TTL_S = 60 * 60
CANCEL_TTL_S = 60 * 60
HEARTBEAT_TTL_S = 30
TERMINAL_TYPES = frozenset({"done", "error"})
_WRITE_ATTEMPTS = 3


STREAM_KEY_PREFIX = "djinn:gen:"


def stream_key(generation_id: UUID | str) -> str:
    return f"{STREAM_KEY_PREFIX}{generation_id}"


def cancel_key(generation_id: UUID | str) -> str:
    return f"{stream_key(generation_id)}:cancel"


def _heartbeat_key(generation_id: UUID | str) -> str:
    return f"{stream_key(generation_id)}:alive"


class StreamWriter:
    """Appends events to one generation's stream, continuing after whatever it already holds.

    Each append also reads the cancel flag in the same round trip: ``cancel_requested`` says whether it was
    set at the last append, so a worker checks it for every delta at no extra cost.
    Not shared between threads: one writer per generation per task.
    """

    def __init__(self, generation_id: UUID | str, *, client: redis.Redis | None = None) -> None:
        self.generation_id = str(generation_id)
        self.key = stream_key(generation_id)
        self._redis = client or get_redis()
        self.seq = self._last_seq()
        self.cancel_requested = False

    def delta(self, text: str, *, beside: tuple[str, str] | None = None) -> int:
        """Append a piece of the reply; returns its seq. ``beside`` (key, value): in the same transaction and
        before the delta, field ``<seq>`` of the hash ``key`` is set to ``value`` (expiring with the stream)."""
        return self._append("delta", text=text, beside=beside)

    def done(self, *, finish_reason: str, usage: dict[str, int] | None) -> int:
        return self._append("done", finish_reason=finish_reason, usage=usage)

    def error(self, *, message: str, code: str = "generation_failed") -> int:
        """``message`` is shown to the user: say what happened, not how (details go to the log)."""
        return self._append("error", message=message, code=code)

    def _last_seq(self) -> int:
        last = self._redis.xrevrange(self.key, count=1)
        return int(last[0][0].split("-")[1]) if last else 0

    def event(self, seq: int, type_: str, **fields: Any) -> dict[str, Any]:
        """The entry for event ``seq`` (before JSON)."""
        return {
            "id": self.generation_id,
            "seq": seq,
            "type": type_,
            "text": fields.get("text", ""),
            "finish_reason": fields.get("finish_reason"),
            "usage": fields.get("usage"),
            "message": fields.get("message"),
            "code": fields.get("code"),
        }

    def _append(self, type_: str, *, beside: tuple[str, str] | None = None, **fields: Any) -> int:
        for _ in range(_WRITE_ATTEMPTS):
            seq = self.seq + 1
            pipe = self._redis.pipeline(transaction=True)
            if beside is not None:
                pipe.hset(beside[0], str(seq), beside[1])
                pipe.expire(beside[0], STREAM_TTL_S)
            pipe.xadd(self.key, {"event": json.dumps(self.event(seq, type_, **fields))}, id=f"0-{seq}")
            pipe.expire(self.key, STREAM_TTL_S)
            pipe.exists(cancel_key(self.generation_id))
            try:
                *_written, cancel = pipe.execute()
            except redis.ResponseError as exc:
                # Another writer (the stale-generation sweeper) appended meanwhile: go on after it, so
                # ids stay dense and no event is overwritten.
                if "equal or smaller" not in str(exc):
                    raise
                self.seq = self._last_seq()
                continue
            self.seq = seq
            self.cancel_requested = bool(cancel)
            return seq
        raise RuntimeError(f"Could not append to {self.key}: other writers keep appending.")


def read_events(generation_id: UUID | str, *, after: int, block_ms: int | None = None) -> list[dict[str, Any]]:
    """The events with seq > ``after``, in order. With ``block_ms``, wait up to that long (ms, > 0) for the
    first one; an empty list means nothing came (or the stream does not exist, or has expired)."""
    response = get_redis().xread({stream_key(generation_id): _after_id(after)}, block=block_ms)
    return _parse(response)


async def aread_events(generation_id: UUID | str, *, after: int, block_ms: int | None = None) -> list[dict[str, Any]]:
    """:func:`read_events` for asyncio code: waits on the socket, never on the event loop."""
    response = await get_async_redis().xread({stream_key(generation_id): _after_id(after)}, block=block_ms)
    return _parse(response)


def _after_id(after: int) -> str:
    if after < 0:
        raise ValueError(f"after must be a seq number (0 or more), got {after}.")
    return f"0-{after}"


def _parse(response: Any) -> list[dict[str, Any]]:
    # RESP2 gives [[key, entries]], RESP3 {key: [entries]}; each entry is (id, {"event": json}).
    if not response:
        return []
    streams = response.values() if isinstance(response, dict) else (entries for _key, entries in response)
    return [json.loads(fields["event"]) for entries in streams for _id, fields in entries]


def request_cancel(generation_id: UUID | str) -> None:
    """Ask the worker to stop this generation; it notices within one engine step."""
    get_redis().set(cancel_key(generation_id), "1", ex=CANCEL_TTL_S)


def cancel_requested(generation_id: UUID | str) -> bool:
    return bool(get_redis().exists(cancel_key(generation_id)))


def heartbeat(generation_id: UUID | str, *, ttl_s: int = HEARTBEAT_TTL_S) -> None:
    """Say that a worker is still producing this generation, for ``ttl_s`` seconds."""
    get_redis().set(_heartbeat_key(generation_id), "1", ex=ttl_s)


def heartbeat_many(generation_ids: list[UUID], *, ttl_s: int = HEARTBEAT_TTL_S) -> list[UUID]:
    """:func:`heartbeat` for each of ``generation_ids``, in one round trip; returns those whose cancel flag
    is set."""
    pipe = get_redis().pipeline(transaction=False)
    for generation_id in generation_ids:
        pipe.set(_heartbeat_key(generation_id), "1", ex=ttl_s)
        pipe.exists(cancel_key(generation_id))
    flags = pipe.execute()[1::2]
    return [generation_id for generation_id, flag in zip(generation_ids, flags, strict=True) if flag]


def worker_alive(generation_id: UUID | str) -> bool:
    """Whether a worker has sent a heartbeat for this generation within its TTL."""
    return bool(get_redis().exists(_heartbeat_key(generation_id)))
