"""The generation stream contract: one Redis stream per generation, read by the WebSocket consumer and
the SSE views, written by the reply task.

Key ``djinn:gen:<id>``. Entries carry explicit ids ``0-<seq>`` with seq = 1, 2, 3..., so "resume after
seq n" is exactly ``XREAD`` from ``0-<n>``: no gap, no duplicate, whoever reads. Each entry has one
field, ``event``, holding JSON::

    {"id": generation id, "seq": n, "type": "delta" | "done" | "error", "text": str,
     "finish_reason": str | None, "usage": {...} | None, "message": str | None, "code": str | None}

``done`` and ``error`` are terminal: a reader stops at the first one. A stream expires an hour after its
last write. Beside it live small keys: the cancel flag, the worker's liveness heartbeat, a completion's
logprobs, and the reader's lease (a client waiting for an API completion renews it; when it lapses, the
worker stops the completion: nobody is left to read it).

Writes go through :func:`append`: any number of streams and events in one round trip, idempotent, with the
cancel flags read in the same trip. The inference worker appends through ``inference.pump`` (every delta of
an engine step at once); :class:`StreamWriter` appends one event at a time for occasional writers. The web
process reads through ``inference.stream_hub`` (one XREAD for every stream it follows) and
``inference.follow``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import redis

from inference.redis import get_async_redis, get_redis

STREAM_TTL_S = 60 * 60
CANCEL_TTL_S = 60 * 60
# A worker renews its generations' liveness keys every second (inference.pump): one that misses a few ticks
# is taken for dead by readers soon.
HEARTBEAT_TTL_S = 5
# A web process renews its readers' leases every LEASE_RENEW_S; a worker stops a generation whose lease has
# lapsed (at two looks in a row, so that a blip of Redis is not taken for a reader gone).
LEASE_TTL_S = 5
LEASE_RENEW_S = 1
TERMINAL_TYPES = frozenset({"done", "error"})
_WRITE_ATTEMPTS = 3


STREAM_KEY_PREFIX = "djinn:gen:"


def stream_key(generation_id: UUID | str) -> str:
    return f"{STREAM_KEY_PREFIX}{generation_id}"


def cancel_key(generation_id: UUID | str) -> str:
    return f"{stream_key(generation_id)}:cancel"


def heartbeat_key(generation_id: UUID | str) -> str:
    return f"{stream_key(generation_id)}:alive"


def logprobs_key(generation_id: UUID | str) -> str:
    """The hash beside a completion's stream whose field ``<seq>`` holds the logprob entries (JSON) of the
    tokens in delta ``seq``; written before the delta, so a reader that sees the delta finds them."""
    return f"{stream_key(generation_id)}:logprobs"


# Appends events to streams, each at its seq, unless an event is already there: the same one (a retry after a
# lost reply wrote it already: skipped) or another writer's (a conflict: the rest of that stream's entries are
# skipped). Per stream it returns the conflict flag and whether the cancel flag is set, so a writer learns both
# in the round trip that appends. KEYS: per generation its stream, cancel flag and logprobs hash. ARGV: the
# TTL, then per generation the number of entries, then per entry its seq, its event JSON and the logprobs JSON
# to set beside it (field <seq> of the hash, before the entry) or "".
_APPEND_LUA = """
local ttl = tonumber(ARGV[1])
local a = 2
local out = {}
for i = 1, #KEYS, 3 do
  local stream, cancel, side = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local n = tonumber(ARGV[a])
  a = a + 1
  local conflict = 0
  local last = 0
  if n > 0 then
    local tail = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    if #tail > 0 then last = tonumber(string.match(tail[1][1], '-(%d+)$')) end
  end
  for j = 1, n do
    local seq, event, beside = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
    a = a + 3
    if conflict == 0 then
      if seq > last then
        if beside ~= '' then
          redis.call('HSET', side, seq, beside)
          redis.call('EXPIRE', side, ttl)
        end
        redis.call('XADD', stream, '0-' .. seq, 'event', event)
        last = seq
      else
        local have = redis.call('XRANGE', stream, '0-' .. seq, '0-' .. seq)
        if #have == 0 or have[1][2][2] ~= event then conflict = 1 end
      end
    end
  end
  if n > 0 then redis.call('EXPIRE', stream, ttl) end
  out[#out + 1] = conflict
  out[#out + 1] = redis.call('EXISTS', cancel)
end
return out
"""


@dataclass(frozen=True)
class Entry:
    """One event to append: its seq, its JSON, and the logprob entries (JSON) of the tokens in it, if any."""

    seq: int
    event: str
    logprobs: str | None = None


@dataclass(frozen=True)
class Appended:
    conflict: bool  # another writer's event holds one of the seqs: nothing from there on was appended
    cancel_requested: bool


_append_scripts: dict[int, Any] = {}


def append(client: redis.Redis, batches: dict[str, list[Entry]]) -> dict[str, Appended]:
    """Append each generation's entries (in seq order) in one round trip, and read each one's cancel flag.

    Idempotent: an entry whose seq the stream already holds with the same event is skipped, so a batch may be
    sent again after a failure that left it unclear whether it was applied. Raises redis.RedisError.
    """
    script = _append_scripts.get(id(client))
    if script is None:
        script = _append_scripts[id(client)] = client.register_script(_APPEND_LUA)
    keys: list[str] = []
    args: list[Any] = [STREAM_TTL_S]
    for generation_id, entries in batches.items():
        keys += [stream_key(generation_id), cancel_key(generation_id), logprobs_key(generation_id)]
        args.append(len(entries))
        for entry in entries:
            args += [entry.seq, entry.event, entry.logprobs or ""]
    flags = script(keys=keys, args=args)
    return {
        generation_id: Appended(conflict=bool(flags[2 * i]), cancel_requested=bool(flags[2 * i + 1]))
        for i, generation_id in enumerate(batches)
    }


def event_json(generation_id: str, seq: int, type_: str, **fields: Any) -> str:
    """The JSON of event ``seq`` of a generation's stream. A worker's ``delta`` also carries ``tokens``: the
    completion tokens made so far (what a generation whose worker died is charged for)."""
    event = {
        "id": generation_id,
        "seq": seq,
        "type": type_,
        "text": fields.get("text", ""),
        "finish_reason": fields.get("finish_reason"),
        "usage": fields.get("usage"),
        "message": fields.get("message"),
        "code": fields.get("code"),
    }
    if "tokens" in fields:
        event["tokens"] = fields["tokens"]
    return json.dumps(event)


def last_seq(generation_id: UUID | str, *, client: redis.Redis | None = None) -> int:
    """The seq of the stream's last event (0 for none, or an expired stream)."""
    last = (client or get_redis()).xrevrange(stream_key(generation_id), count=1)
    return int(last[0][0].split("-")[1]) if last else 0


class StreamWriter:
    """Appends events to one generation's stream, one round trip each, continuing after whatever it holds
    (another writer's events included). For writers of a few events: the stale-generation sweeper, a
    redelivered task ending an orphaned stream. The inference worker writes through ``inference.pump``.

    Each append also reads the cancel flag: ``cancel_requested`` says whether it was set at the last append.
    Not shared between threads.
    """

    def __init__(self, generation_id: UUID | str, *, client: redis.Redis | None = None) -> None:
        self.generation_id = str(generation_id)
        self.key = stream_key(generation_id)
        self._redis = client or get_redis()
        self.seq = last_seq(generation_id, client=self._redis)
        self.cancel_requested = False

    def delta(self, text: str, *, logprobs: str | None = None) -> int:
        """Append a piece of the reply; returns its seq. ``logprobs``: JSON set beside it, in the same round
        trip and before it (field ``<seq>`` of the generation's logprobs hash)."""
        return self._append("delta", logprobs=logprobs, text=text)

    def done(self, *, finish_reason: str, usage: dict[str, int] | None) -> int:
        return self._append("done", finish_reason=finish_reason, usage=usage)

    def error(self, *, message: str, code: str = "generation_failed") -> int:
        """``message`` is shown to the user: say what happened, not how (details go to the log)."""
        return self._append("error", message=message, code=code)

    def _append(self, type_: str, *, logprobs: str | None = None, **fields: Any) -> int:
        for _ in range(_WRITE_ATTEMPTS):
            seq = self.seq + 1
            entry = Entry(seq, event_json(self.generation_id, seq, type_, **fields), logprobs)
            result = append(self._redis, {self.generation_id: [entry]})[self.generation_id]
            if result.conflict:
                # Another writer appended meanwhile: go on after it, so ids stay dense and nothing is overwritten.
                self.seq = last_seq(self.generation_id, client=self._redis)
                continue
            self.seq = seq
            self.cancel_requested = result.cancel_requested
            return seq
        raise RuntimeError(f"Could not append to {self.key}: other writers keep appending.")


def read_events(generation_id: UUID | str, *, after: int, block_ms: int | None = None) -> list[dict[str, Any]]:
    """The events with seq > ``after``, in order. With ``block_ms``, wait up to that long (ms, > 0) for the
    first one; an empty list means nothing came (or the stream does not exist, or has expired)."""
    response = get_redis().xread({stream_key(generation_id): _after_id(after)}, block=block_ms)
    return parse_events(response)


async def aread_events(generation_id: UUID | str, *, after: int, block_ms: int | None = None) -> list[dict[str, Any]]:
    """:func:`read_events` for asyncio code: waits on the socket, never on the event loop."""
    response = await get_async_redis().xread({stream_key(generation_id): _after_id(after)}, block=block_ms)
    return parse_events(response)


def _after_id(after: int) -> str:
    if after < 0:
        raise ValueError(f"after must be a seq number (0 or more), got {after}.")
    return f"0-{after}"


def parse_events(response: Any) -> list[dict[str, Any]]:
    # RESP2 gives [[key, entries]], RESP3 {key: [entries]}; each entry is (id, {"event": json}).
    if not response:
        return []
    streams = response.values() if isinstance(response, dict) else (entries for _key, entries in response)
    return [json.loads(fields["event"]) for entries in streams for _id, fields in entries]


def lease_key(generation_id: UUID | str) -> str:
    return f"{stream_key(generation_id)}:reader"


def lease_renew(generation_ids: list[UUID] | list[str], *, ttl_s: int = LEASE_TTL_S) -> None:
    """Say that a client is still waiting for these generations, for ``ttl_s`` seconds."""
    pipe = get_redis().pipeline(transaction=False)
    for generation_id in generation_ids:
        pipe.set(lease_key(generation_id), "1", ex=ttl_s)
    pipe.execute()


async def alease_renew(generation_ids: list[UUID] | list[str], *, ttl_s: int = LEASE_TTL_S) -> None:
    """:func:`lease_renew` for asyncio code."""
    pipe = get_async_redis().pipeline(transaction=False)
    for generation_id in generation_ids:
        pipe.set(lease_key(generation_id), "1", ex=ttl_s)
    await pipe.execute()


def request_cancel(generation_id: UUID | str) -> None:
    """Ask the worker to stop this generation; it notices within one engine step."""
    get_redis().set(cancel_key(generation_id), "1", ex=CANCEL_TTL_S)


async def arequest_cancel(generation_ids: list[UUID] | list[str]) -> None:
    """:func:`request_cancel` of several generations, for asyncio code, in one round trip."""
    pipe = get_async_redis().pipeline(transaction=False)
    for generation_id in generation_ids:
        pipe.set(cancel_key(generation_id), "1", ex=CANCEL_TTL_S)
    await pipe.execute()


def cancel_requested(generation_id: UUID | str) -> bool:
    return bool(get_redis().exists(cancel_key(generation_id)))


def heartbeat(generation_id: UUID | str, *, ttl_s: int = HEARTBEAT_TTL_S) -> None:
    """Say that a worker is still producing this generation, for ``ttl_s`` seconds."""
    get_redis().set(heartbeat_key(generation_id), "1", ex=ttl_s)


def worker_alive(generation_id: UUID | str) -> bool:
    """Whether a worker has sent a heartbeat for this generation within its TTL."""
    return bool(get_redis().exists(heartbeat_key(generation_id)))


async def aworker_alive(generation_id: UUID | str) -> bool:
    """:func:`worker_alive` for asyncio code."""
    return bool(await get_async_redis().exists(heartbeat_key(generation_id)))


# A model being loaded by an inference worker (its weights read, its engine built): the chat page says "loading
# the model" for a reply that waits on it. Set for the load's duration, with a TTL in case the worker dies.
MODEL_LOADING_TTL_S = 300


def model_loading_key(model_name: str) -> str:
    return f"djinn:model-loading:{model_name}"


@contextlib.contextmanager
def model_loading(model_name: str) -> Iterator[None]:
    """Mark ``model_name`` as loading while the block runs. Best effort: Redis away, the load goes on unmarked."""
    key = model_loading_key(model_name)
    try:
        get_redis().set(key, "1", ex=MODEL_LOADING_TTL_S)
    except (redis.RedisError, OSError):
        pass
    try:
        yield
    finally:
        with contextlib.suppress(redis.RedisError, OSError):
            get_redis().delete(key)


async def amodel_loading(model_name: str) -> bool:
    return bool(await get_async_redis().exists(model_loading_key(model_name)))
