"""The user's plan limits, where generations start and end (accounts.billing.quotas does the counting).

The web side reserves every reply and completion before it is queued (:class:`Reservation`: ``LimitReached``
when a limit says no, and nothing is queued). While Redis is away nothing can be reserved: a message is let
through rather than lost (its reply waits for Redis, the broker, anyway). The worker side says when a
generation is claimed and how it ended (:func:`claimed`, :func:`settle`, :func:`release`). Ending a
reservation never fails a generation: if Redis cannot be reached, the reservation runs out by itself (no
worker heart-beats it any more).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import redis
from django.conf import settings
from django.utils.translation import gettext as _

from accounts.billing import quotas
from accounts.billing.quotas import Limits
from conversations.errors import ContextTooLong, LimitReached, NotAllowed
from inference import runtime, streams
from inference.models import LLMModel

logger = logging.getLogger(__name__)


def limits_of(user_id: int) -> Limits:
    return quotas.limits_of(user_id=user_id)


def rate_headers(user_id: int, plan: Limits) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the user's API requests and tokens per minute under ``plan`` (a
    limit the plan does not set is left out)."""
    room = quotas.headroom(user_id=user_id, limits=plan)
    headers: dict[str, str] = {}
    if room.requests_limit is not None:
        headers["x-ratelimit-limit-requests"] = str(room.requests_limit)
        headers["x-ratelimit-remaining-requests"] = str(room.requests_remaining)
        headers["x-ratelimit-reset-requests"] = duration(room.requests_reset_s)
    if room.tokens_limit is not None:
        headers["x-ratelimit-limit-tokens"] = str(room.tokens_limit)
        headers["x-ratelimit-remaining-tokens"] = str(room.tokens_remaining)
        headers["x-ratelimit-reset-tokens"] = duration(room.tokens_reset_s)
    return headers


def duration(seconds: float) -> str:
    """A duration as OpenAI writes it in its headers: ``0s``, ``120ms``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


def check_model(limits: Limits, model: LLMModel) -> None:
    """Raise NotAllowed (code ``model_not_in_plan``) when the plan does not include ``model``."""
    if not limits.allows_model(model.name):
        raise NotAllowed(
            _("The %(plan)s plan does not include %(model)s. Upgrade to use it.")
            % {"plan": limits.plan, "model": model.display_name or model.name},
            "model_not_in_plan",
        )


def context_of(limits: Limits, model: LLMModel) -> int:
    """Tokens a prompt plus its reply may span for this user: the model's, or the plan's if smaller."""
    context = runtime.context_length(model)
    return min(context, limits.max_context) if limits.max_context else context


def check_plan_context(limits: Limits, prompt_tokens: int, model: LLMModel) -> int:
    """The room left for a reply under the plan's longest context; ContextTooLong when there is none."""
    context = context_of(limits, model)
    if limits.max_context and prompt_tokens >= limits.max_context:
        raise ContextTooLong(
            _(
                "This conversation takes %(tokens)d tokens and the %(plan)s plan reads at most %(context)d. "
                "Start a new conversation, or upgrade for longer ones."
            )
            % {"tokens": prompt_tokens, "plan": limits.plan, "context": limits.max_context}
        )
    return context - prompt_tokens


@contextmanager
def reserving(*, user_id: int, limits: Limits) -> Iterator[Reservation]:
    """A reservation to take inside a block: if the block fails after taking it, it is released."""
    reservation = Reservation(user_id=user_id, limits=limits)
    try:
        yield reservation
    except BaseException:
        reservation.undo()
        raise


class Reservation:
    def __init__(self, *, user_id: int, limits: Limits) -> None:
        self.user_id = user_id
        self.limits = limits
        self.generation_ids: list[str] = []

    def take(self, generation_ids: list[UUID], *, tokens_each: int, api: bool) -> None:
        """Reserve ``generation_ids`` as one request. Raises LimitReached."""
        ids = [str(generation_id) for generation_id in generation_ids]
        try:
            quotas.reserve(
                user_id=self.user_id,
                limits=self.limits,
                generation_ids=ids,
                tokens_each=tokens_each,
                api=api,
                alive_key=streams.heartbeat_key("{id}"),
                deadline_s=settings.DJINN_GENERATION_QUEUED_TIMEOUT_S,
            )
        except quotas.LimitReached as exc:
            raise LimitReached(exc.message, exc.code, retry_after_s=exc.retry_after_s, kind=exc.kind) from None
        except (redis.ConnectionError, redis.TimeoutError):
            # Redis away: the message is kept and its reply waits for Redis anyway (the broker lives there).
            # Refusing it would lose what the user wrote; it is let through, unreserved, and logged.
            logger.warning("Limits not checked for user %s: Redis is away", self.user_id, exc_info=True)
            return
        self.generation_ids.extend(ids)

    def undo(self) -> None:
        for generation_id in self.generation_ids:
            release(user_id=self.user_id, generation_id=generation_id)
        self.generation_ids = []


def claimed(*, user_id: int, generation_id: UUID | str) -> None:
    _quietly(quotas.claimed, user_id=user_id, generation_id=str(generation_id))


def settle(*, user_id: int, generation_id: UUID | str, usage: dict[str, Any]) -> None:
    tokens = int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
    _quietly(quotas.settle, user_id=user_id, generation_id=str(generation_id), tokens=tokens)


def release(*, user_id: int, generation_id: UUID | str) -> None:
    _quietly(quotas.release, user_id=user_id, generation_id=str(generation_id))


def _quietly(end: Any, **kwargs: Any) -> None:
    try:
        end(**kwargs)
    except redis.RedisError:
        logger.warning("Could not update the reservation of %s", kwargs["generation_id"], exc_info=True)
