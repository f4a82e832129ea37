"""API completions, the web side: generations whose messages come inline, stored in no conversation.

The /v1 view calls :func:`completion_start`: it checks the request against the model (enabled, the prompt
fits its context), gives each choice a fresh generation id, takes the reader's lease on each (the view renews
it while it waits; a worker drops a completion whose lease has lapsed: its client is gone) and enqueues
``generate_completion`` with the messages inline. The inference worker runs it
(``conversations.generations.CompletionGeneration``) into a stream of the same contract, which the view
follows. Nothing of it is kept in PostgreSQL but its usage record.

Logprobs ride beside the stream, in the hash ``streams.logprobs_key``: field ``<seq>`` holds the entries of
the tokens whose text is in the delta with that seq, written before the delta itself, so a reader that sees
the delta finds them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from accounts.billing.quotas import Limits
from accounts.models import User
from accounts.selectors import user_can_chat
from conversations import limits, prompts
from conversations.errors import InvalidInput, NotAllowed
from conversations.tasks import generate_completion
from inference import streams
from inference.engine import InvalidRequestError, SamplingParams
from inference.faults import release_connection
from inference.models import LLMModel
from inference.redis import get_async_redis
from inference.registry import model_get

logger = logging.getLogger(__name__)

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


def completion_start(
    *, user: User, api_key_id: int | None, request: CompletionRequest, plan: Limits | None = None
) -> StartedCompletion:
    """Enqueue the generations of ``request`` (one per choice) for ``user``, charged to ``api_key_id``, under
    the limits ``plan`` (the user's, read now, when not given).

    Raises LLMModel.DoesNotExist (unknown or disabled model, or one the user's plan does not include),
    NotAllowed, InvalidInput (a parameter the engine refuses), ContextTooLong (the messages, or the messages
    plus max_tokens, exceed the context), LimitReached (the plan's limits: nothing is queued).
    """
    if not user_can_chat(user):
        raise NotAllowed("Verify your e-mail address before using the API.")
    plan = plan or limits.limits_of(user.pk)
    model = model_get(request.model)
    if not plan.allows_model(model.name):
        raise LLMModel.DoesNotExist(request.model)
    params = {**(model.default_params or {}), **request.params}
    prompt_tokens = prompts.count_tokens(request.messages, model)
    params["max_tokens"] = prompts.completion_max_tokens(
        prompt_tokens, limits.context_of(plan, model), asked=request.params.get("max_tokens"), default=params
    )
    _check_params(params)
    created = time.time()
    generation_ids = [uuid.uuid4() for _ in range(request.n)]
    release_connection()
    reservation = limits.Reservation(user_id=user.pk, limits=plan)
    reservation.take(generation_ids, tokens_each=prompt_tokens + params["max_tokens"], api=True)
    try:
        streams.lease_renew(generation_ids)  # before a worker can look for it
    except BaseException:
        reservation.undo()
        raise
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
                "prompt_tokens": prompt_tokens,
            }
            # The messages stay out of the worker's logs ("task received" shows argsrepr, not the arguments).
            generate_completion.apply_async(
                (str(generation_id), payload),
                argsrepr=f"('{generation_id}', <{len(request.messages)} messages>)",
                kwargsrepr="{}",
            )
            queued += 1
    finally:
        # The broker failed part-way: the choices already queued would run for nobody.
        for generation_id in generation_ids[:queued] if queued < len(generation_ids) else []:
            streams.request_cancel(generation_id)
        if queued < len(generation_ids):
            reservation.undo()
    logger.info(
        "Completion queued",
        extra={"generation_ids": [str(g) for g in generation_ids], "model": model.name, "user_id": user.pk},
    )
    return StartedCompletion(generation_ids, model.name, int(created), prompt_tokens)


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


async def read_logprobs(generation_id: UUID | str, seqs: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The logprob entries of the deltas ``seqs`` of a completion (a delta whose tokens had none is absent)."""
    if not seqs:
        return {}
    values = await get_async_redis().hmget(streams.logprobs_key(generation_id), [str(seq) for seq in seqs])
    return {seq: json.loads(value) for seq, value in zip(seqs, values, strict=True) if value is not None}
