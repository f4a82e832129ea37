"""Celery tasks: one-line doors to the worker's side (``conversations.generations``, ``.titles``). They take
ids, are idempotent, and import nothing of the web side; the web side (services, completions) imports them.

``generate_reply`` runs on the ``inference`` queue (CELERY_TASK_ROUTES), and so does
``generate_completion``: the same body for an API request, whose messages come inline since no
conversation holds them. ``generate_title`` runs there too: it needs the model, and the inference worker
already holds it in memory and batches the title with the replies it is writing, where a default worker
would load a second copy of the weights and fight the engine for the same cores.
``sweep_stale_generations`` and ``rollup_recent_days`` (beat) touch only PostgreSQL and Redis and run on
``default``, as do ``export_build`` (a user's data export), ``forget_old_exports`` and ``forget_unsent_documents``
(beat).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

import redis
from celery import shared_task
from celery.exceptions import Reject
from django.conf import settings
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from accounts.billing.rollups import usage_rollup
from conversations import exports, generations, titles
from conversations.rollups import replies_rollup
from inference import runtime
from inference.redis import get_redis

logger = logging.getLogger(__name__)


def _not_while_stopping() -> None:
    """A task that reaches an inference worker after it was told to stop (Celery still hands over what its
    consumer had fetched) goes back to the queue untouched, for another worker (or this one's successor)."""
    if runtime.stopping():
        raise Reject("this inference worker is shutting down", requeue=True)


@shared_task(name="conversations.tasks.generate_reply", ignore_result=True, bind=True)
def generate_reply(self: Any, message_id: str) -> None:
    _not_while_stopping()
    conversation_id = generations.reply_generate(message_id, task_id=self.request.id)
    if conversation_id is not None:
        generate_title.delay(str(conversation_id))


def reply_enqueue(message_id: UUID | str) -> bool:
    """Send a queued reply to the inference workers. When the broker is out of reach the reply stays queued
    (nothing is lost: it is committed) and the sweeper sends it again once it can; False then."""
    try:
        generate_reply.delay(str(message_id))
        # Kept while the task may wait in the queue (after that the sweeper fails the reply anyway).
        get_redis().set(generations.enqueued_key(message_id), "1", ex=settings.DJINN_GENERATION_QUEUED_TIMEOUT_S)
    except (BrokerError, redis.RedisError) as exc:
        logger.error("Could not queue reply %s (it stays queued): %s", message_id, exc)
        return False
    return True


@shared_task(name="conversations.tasks.generate_completion", ignore_result=True, queue="inference")
def generate_completion(generation_id: str, request: dict[str, Any]) -> None:
    """``request``: the user, API key, model, messages and sampling parameters (completions.completion_start)."""
    _not_while_stopping()
    generations.completion_generate(generation_id, request)


@shared_task(name="conversations.tasks.generate_title", ignore_result=True, queue="inference", bind=True)
def generate_title(self: Any, conversation_id: str) -> None:
    _not_while_stopping()
    # A redelivery (its worker died on it) is not run again: a title is not worth a second worker.
    if generations.first_delivery(self.request.id):
        titles.title_generate(conversation_id)


@shared_task(name="conversations.tasks.sweep_stale_generations", ignore_result=True)
def sweep_stale_generations() -> int:
    """Fail the replies whose worker died or that waited too long; send again those whose task was lost."""
    failed = generations.sweep_stale()
    for message_id in generations.replies_to_requeue():
        reply_enqueue(message_id)
    return failed


@shared_task(name="conversations.tasks.export_build", ignore_result=True)
def export_build(export_id: int) -> None:
    exports.export_build(export_id)


@shared_task(name="conversations.tasks.forget_old_exports", ignore_result=True)
def forget_old_exports() -> None:
    """Delete data exports past their keeping time (beat)."""
    exports.export_forget_old()


@shared_task(name="conversations.tasks.forget_unsent_documents", ignore_result=True)
def forget_unsent_documents() -> int:
    """Delete files uploaded for a message that was never sent, a day on (beat)."""
    from conversations.documents import documents_forget_unsent

    return documents_forget_unsent()


@shared_task(name="conversations.tasks.rollup_recent_days", ignore_result=True)
def rollup_recent_days() -> None:
    """Roll up today and yesterday (UTC) for the analytics page: yesterday's last minutes land after midnight."""
    today = timezone.now().date()
    for day in (today - timedelta(days=1), today):
        usage_rollup(day=day)
        replies_rollup(day=day)
