"""Celery tasks. They take ids, are idempotent, and leave the work to conversations.replies / .completions /
.titles.

``generate_reply`` runs on the ``inference`` queue (CELERY_TASK_ROUTES), and so does
``generate_completion``: the same body for an API request, whose messages come inline since no
conversation holds them. ``generate_title`` runs there too: it needs the model, and the inference worker
already holds it in memory and batches the title with the replies it is writing, where a default worker
would load a second copy of the weights and fight the engine for the same cores.
``sweep_stale_generations`` (beat) touches only PostgreSQL and Redis and runs on ``default``.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from conversations import completions, replies, titles


@shared_task(name="conversations.tasks.generate_reply", ignore_result=True)
def generate_reply(message_id: str) -> None:
    replies.generate(message_id)


@shared_task(name="conversations.tasks.generate_completion", ignore_result=True, queue="inference")
def generate_completion(generation_id: str, request: dict[str, Any]) -> None:
    """``request``: the user, API key, model, messages and sampling parameters (completions.completion_start)."""
    completions.generate(generation_id, request)


@shared_task(name="conversations.tasks.generate_title", ignore_result=True, queue="inference")
def generate_title(conversation_id: str) -> None:
    titles.title_generate(conversation_id)


@shared_task(name="conversations.tasks.sweep_stale_generations", ignore_result=True)
def sweep_stale_generations() -> int:
    return replies.sweep_stale()
