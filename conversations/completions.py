"""API completions: generations whose messages come inline, stored in no conversation.

The /v1 view calls :func:`completion_start`: it checks the request against the model (enabled, the prompt
fits its context), gives each choice a fresh generation id and enqueues ``generate_completion`` with the
messages inline. The inference worker runs it with the body of a chat reply (``replies.Generation``) into
a stream of the same contract, which the view reads. Nothing of it is kept in PostgreSQL but its usage
record: its state is its Redis stream, plus a claim key that turns a redelivered task into a no-op, or,
when the worker that claimed it has died, into an ``error`` event that ends the stream.

Logprobs ride beside the stream, in the hash ``djinn:gen:<id>:logprobs``: field ``<seq>`` holds the
entries of the tokens whose text is in the delta with that seq, written before the delta itself, so a
reader that sees the delta finds them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from accounts.models import UsageRecord, User
from accounts.selectors import user_can_chat
from accounts.usage import usage_record
from conversations.errors import ContextTooLong, InvalidInput, NotAllowed
from conversations.models import Message
from conversations.replies import Generation
from inference import metrics, runtime, streams
from inference.engine import Engine, InvalidRequestError, RequestOutput, SamplingParams, TokenLogprob
from inference.engine.tokenizer import Tokenizer
from inference.models import LLMModel
from inference.redis import get_async_redis, get_redis
from inference.registry import model_get

logger = logging.getLogger(__name__)

ORPHANED = "The worker writing this completion stopped. Try again."
ENGINE_FAILED = "The model failed while writing this completion. Try again."
INTERRUPTED = "This completion was interrupted because its worker shut down. Try again."
SEED_MODULUS = 2**64


@dataclass(frozen=True)
class CompletionRequest:
    """A validated /v1 request. ``params`` holds the sampling parameters the request set, by their engine
    names (SamplingParams fields); the model's defaults fill in the rest."""

    model: str
    messages: list[dict[str, str]]
    params: dict[str, Any]
    n: int = 1


@dataclass(frozen=True)
class StartedCompletion:
    generation_ids: list[UUID]  # one per choice, in choice order
    model: str
    created: int  # Unix time, seconds
    prompt_tokens: int


def completion_start(*, user: User, api_key_id: int | None, request: CompletionRequest) -> StartedCompletion:
    """Enqueue the generations of ``request`` (one per choice) for ``user``, charged to ``api_key_id``.

    Raises LLMModel.DoesNotExist (unknown or disabled model), NotAllowed, InvalidInput (a parameter the
    engine refuses), ContextTooLong (the messages, or the messages plus max_tokens, exceed the context).
    """
    from conversations.tasks import generate_completion  # the tasks module imports this one

    if not user_can_chat(user):
        raise NotAllowed("Verify your e-mail address before using the API.")
    model = model_get(request.model)
    params = {**(model.default_params or {}), **request.params}
    prompt_tokens = runtime.count_chat_tokens(request.messages, model)
    params["max_tokens"] = _max_tokens(
        prompt_tokens, runtime.context_length(model), asked=request.params.get("max_tokens"), default=params
    )
    _check_params(params)
    created = time.time()
    generation_ids = [uuid.uuid4() for _ in range(request.n)]
    queued = 0
    try:
        for index, generation_id in enumerate(generation_ids):
            payload = {
                "user_id": user.pk,
                "api_key_id": api_key_id,
                "model": model.name,
                "messages": request.messages,
                "params": _choice_params(params, index),
                "created": created,
            }
            generate_completion.delay(str(generation_id), payload)
            queued += 1
    finally:
        # The broker failed part-way: the choices already queued would run for nobody.
        for generation_id in generation_ids[:queued] if queued < len(generation_ids) else []:
            streams.request_cancel(generation_id)
    logger.info(
        "Completion queued",
        extra={"generation_ids": [str(g) for g in generation_ids], "model": model.name, "user_id": user.pk},
    )
    return StartedCompletion(generation_ids, model.name, int(created), prompt_tokens)


def _max_tokens(prompt_tokens: int, context: int, *, asked: int | None, default: dict[str, Any]) -> int:
    """The reply's token budget: what the request asked for (refused when it does not fit), else the model's
    default capped to the room the prompt leaves."""
    room = context - prompt_tokens
    if asked is not None and prompt_tokens + asked > context:
        raise ContextTooLong(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + asked} tokens ({prompt_tokens} in the messages, {asked} in the completion). "
            "Please reduce the length of the messages or completion."
        )
    if room < 1:
        raise ContextTooLong(
            f"This model's maximum context length is {context} tokens. However, your messages resulted in "
            f"{prompt_tokens} tokens. Please reduce the length of the messages."
        )
    if asked is not None:
        return asked
    return min(default.get("max_tokens") or room, room)


def _check_params(params: dict[str, Any]) -> None:
    try:
        SamplingParams(**params)
    except (InvalidRequestError, TypeError) as exc:
        raise InvalidInput(str(exc)) from exc


def _choice_params(params: dict[str, Any], index: int) -> dict[str, Any]:
    """Choice ``index``'s parameters: with a seed, choice i draws with seed + i, so n choices differ from
    each other and the whole response is still reproducible."""
    if index == 0 or params.get("seed") is None:
        return params
    seed = (params["seed"] + index) % SEED_MODULUS
    return {**params, "seed": seed if seed < 2**63 else seed - SEED_MODULUS}


# -- the worker's side ---------------------------------------------------------------------------------


def _claim_key(generation_id: UUID | str) -> str:
    return f"{streams.stream_key(generation_id)}:claim"


def logprobs_key(generation_id: UUID | str) -> str:
    return f"{streams.stream_key(generation_id)}:logprobs"


def generate(generation_id: UUID | str, request: dict[str, Any]) -> None:
    """Run the completion ``generation_id`` (``request`` as built by completion_start). Safe to call any
    number of times: only the first call runs it."""
    generation_id = UUID(str(generation_id))
    claimed = get_redis().set(_claim_key(generation_id), "1", nx=True, ex=streams.STREAM_TTL_S)
    if not claimed:
        _end_if_orphaned(generation_id)
        return
    # Alive from the claim on, so a reader waiting for the first token knows a worker has it.
    streams.heartbeat(generation_id)
    metrics.generation_started(request["model"])
    _Completion(generation_id, request).run()


def _end_if_orphaned(generation_id: UUID) -> None:
    """A redelivery: end the stream with an error if the worker that claimed the completion died before
    finishing it; else (finished, or still being written) do nothing."""
    writer = streams.StreamWriter(generation_id)
    last = streams.read_events(generation_id, after=writer.seq - 1) if writer.seq else []
    if (last and last[-1]["type"] in streams.TERMINAL_TYPES) or streams.worker_alive(generation_id):
        return
    logger.warning("Completion %s was orphaned", generation_id, extra={"generation_id": str(generation_id)})
    writer.error(message=ORPHANED)


class _Completion(Generation):
    usage_source = UsageRecord.Source.API
    engine_failed = ENGINE_FAILED
    interrupted = INTERRUPTED

    def __init__(self, generation_id: UUID, request: dict[str, Any]) -> None:
        created_at = datetime.fromtimestamp(request["created"], tz=UTC)
        super().__init__(generation_id, model_name=request["model"], created_at=created_at)
        self.request = request
        self.wants_logprobs = bool(request["params"].get("logprobs"))
        self.pending_logprobs: list[dict[str, Any]] = []
        self.tokenizer: Tokenizer | None = None
        self.ended = False

    def prompt(self, engine: Engine, model: LLMModel) -> tuple[list[int], SamplingParams]:
        prompt_ids = engine.tokenizer.encode_chat(self.request["messages"])
        params = dict(self.request["params"])
        # The web process checked the fit against the checkpoint; this engine's KV cache may hold less.
        params["max_tokens"] = _max_tokens(
            len(prompt_ids), runtime.context_length(model), asked=params.get("max_tokens"), default=params
        )
        try:
            sampling = SamplingParams(**params)
        except (InvalidRequestError, TypeError) as exc:
            raise InvalidInput(str(exc)) from exc
        self.tokenizer = engine.tokenizer
        return prompt_ids, sampling

    def on_output(self, output: RequestOutput) -> None:
        if self.wants_logprobs and output.logprobs:
            self.pending_logprobs += [self._logprob_entry(logprob) for logprob in output.logprobs]

    def append_delta(self, text: str) -> int:
        if not self.pending_logprobs:
            return super().append_delta(text)
        # Written in the delta's own transaction, before it: a reader that sees the delta finds them.
        beside = (logprobs_key(self.generation_id), json.dumps(self.pending_logprobs))
        self.pending_logprobs = []
        return self.writer.delta(text, beside=beside)

    def end(self, status: str, finish_reason: str, final: RequestOutput | None) -> None:
        if self.ended:
            return
        usage = self.usage(final)
        usage_record(
            user_id=self.request["user_id"],
            generation_id=self.generation_id,
            model=self.model_name,
            source=self.usage_source,
            api_key_id=self.request["api_key_id"],
            **usage,
        )
        self.seq = self.writer.done(finish_reason=finish_reason, usage=usage)
        self.ended = True
        self.finished_metrics(status, usage, self.duration_ms())

    def fail(self, reason: str, *, code: str = "generation_failed", final: RequestOutput | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        logger.warning("Completion %s failed: %s", self.id, reason, extra={"generation_id": self.id, "code": code})
        self.seq = self.writer.error(message=reason, code=code)
        metrics.generation_finished(self.model_name, Message.Status.FAILED)

    def _logprob_entry(self, logprob: TokenLogprob) -> dict[str, Any]:
        entry = self._token(logprob.token_id, logprob.logprob)
        entry["top_logprobs"] = [self._token(token_id, value) for token_id, value in logprob.top]
        return entry

    def _token(self, token_id: int, logprob: float) -> dict[str, Any]:
        assert self.tokenizer is not None
        text = self.tokenizer.decode([token_id]) or self.tokenizer.id_to_token(token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


async def read_logprobs(generation_id: UUID | str, seqs: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The logprob entries of the deltas ``seqs`` of a completion (a delta whose tokens had none is absent)."""
    if not seqs:
        return {}
    values = await get_async_redis().hmget(logprobs_key(generation_id), [str(seq) for seq in seqs])
    return {seq: json.loads(value) for seq, value in zip(seqs, values, strict=True) if value is not None}
