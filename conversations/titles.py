"""A short title for a conversation, written by the model after its first reply.

A small model's title can be nonsense, the same sentence for every chat, or rude: the model's title is kept
only when it passes :func:`title_acceptable`; otherwise the provisional one (the start of the user's first
message) stays.
"""

from __future__ import annotations

import logging
import re
from uuid import UUID

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from conversations.models import Conversation, Message
from conversations.presenters import conversation_to_dict
from inference import runtime
from inference.engine import EngineError, SamplingParams
from inference.models import LLMModel
from inference.registry import model_get

logger = logging.getLogger(__name__)

TITLE_MAX_TOKENS = 16
TITLE_MAX_CHARS = 80
EXCERPT_CHARS = 600
INSTRUCTION = (
    "Write a title of at most six words for the conversation below. "
    "Reply with the title only: no quotes, no final punctuation."
)
_PREFIX = re.compile(r"^\s*(title|subject)\s*:\s*", re.IGNORECASE)
_EDGES = "\"'`*#_“”‘’«» \t"
_TRAILING = ".,;:!?…-–— "
_WORD = re.compile(r"\w+")
RECENT_TITLES = 20
# Words a title never gets from the model unless the user wrote them first.
RUDE = frozenset(
    {
        "idiot", "idiots", "stupid", "moron", "morons", "dumb", "fuck", "fucking", "shit", "bitch",
        "bastard", "asshole", "cunt", "retard", "loser", "ugly", "hate", "kill",
    }
)  # fmt: skip


def title_generate(conversation_id: UUID | str) -> None:
    """Replace the provisional title with one the model writes (greedy, at most 16 tokens), keeping the
    provisional one if the model fails or writes nothing usable; then tell the owner's open pages. Does
    nothing if the title is no longer provisional (already generated, or renamed by the user)."""
    conversation = Conversation.objects.filter(pk=conversation_id, title_is_provisional=True).first()
    if conversation is None:
        return
    reply = (
        Message.objects.select_related("parent")
        .filter(conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.COMPLETED)
        .order_by("created_at")
        .first()
    )
    if reply is None or reply.parent is None:
        return
    title = _ask_model(conversation, reply.parent.content, reply.content)
    recent = Conversation.objects.filter(owner_id=conversation.owner_id, title_is_provisional=False).exclude(
        pk=conversation.pk
    )
    recent_titles = list(recent.order_by("-updated_at").values_list("title", flat=True)[:RECENT_TITLES])
    if not title_acceptable(title, question=reply.parent.content, answer=reply.content, recent=recent_titles):
        if title:
            logger.info("Model title for %s not kept: %r", conversation.pk, title)
        title = conversation.title
    updated = Conversation.objects.filter(pk=conversation.pk, title_is_provisional=True).update(
        title=title, title_is_provisional=False
    )
    if updated:
        conversation.refresh_from_db()
        _notify(conversation)


def title_acceptable(title: str, *, question: str, answer: str, recent: list[str]) -> bool:
    """Whether the model's ``title`` may replace the provisional one: two to twelve words, at least one of
    them (of five letters or more: not "with") from the question or the answer, not the title of one of the
    user's recent chats, and no insult the user did not write first."""
    words = _WORD.findall(title.lower())
    if not 2 <= len(title.split()) <= 12:
        return False
    said = set(_WORD.findall(f"{question} {answer}".lower()))
    if not any(len(word) >= 5 and word in said for word in words):
        return False
    if title.casefold() in {other.casefold() for other in recent}:
        return False
    asked = set(_WORD.findall(question.lower()))
    return not any(word in RUDE and word not in asked for word in words)


def clean_title(text: str) -> str:
    """The first line of the model's answer, without a "Title:" prefix, quotes, markup or final punctuation."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = _PREFIX.sub("", line).strip(_EDGES).rstrip(_TRAILING).strip(_EDGES)
    # No replacement characters, and no control characters (PostgreSQL text cannot even hold NUL).
    line = "".join(c for c in line.replace("\ufffd", "") if c.isprintable() or c.isspace())
    line = " ".join(line.split())
    if len(line) > TITLE_MAX_CHARS:
        line = line[:TITLE_MAX_CHARS].rsplit(" ", 1)[0]
    return line


def _ask_model(conversation: Conversation, question: str, answer: str) -> str:
    chat = [
        {
            "role": "user",
            "content": f"{INSTRUCTION}\n\nUser: {question[:EXCERPT_CHARS]}\n\nAssistant: {answer[:EXCERPT_CHARS]}",
        }
    ]
    try:
        engine = runtime.get_engine(model_get(conversation.model))
        output = engine.generate(chat, SamplingParams(temperature=0.0, max_tokens=TITLE_MAX_TOKENS))
    except (LLMModel.DoesNotExist, EngineError):
        logger.warning("No title for conversation %s", conversation.pk, exc_info=True)
        return ""
    return clean_title(output.text)


def _notify(conversation: Conversation) -> None:
    """Tell the owner's open pages; best effort (the title is saved: a page that missed it shows it on reload)."""
    layer = get_channel_layer()
    if layer is None:
        return
    event = {"type": "conversation.updated", "conversation": conversation_to_dict(conversation)}
    try:
        async_to_sync(layer.group_send)(f"user.{conversation.owner_id}", event)
    except (redis.RedisError, OSError) as exc:
        logger.warning("The pages of conversation %s were not told its title: %s", conversation.pk, exc)
