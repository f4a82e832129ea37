"""Plain JSON-able dicts of conversations and messages, shared by the WebSocket consumer, the chat page,
the title task's ``conversation.updated`` event and the REST API. Ids are strings, times ISO 8601."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils.translation import gettext

from conversations.models import Conversation, Message
from conversations.selectors import BranchMessage


def message_to_dict(message: Message) -> dict[str, Any]:
    """``seq``: the last stream event whose text ``content`` includes; a page showing an unfinished reply
    watches its generation after that seq."""
    return {
        "id": str(message.pk),
        "conversation": str(message.conversation_id),
        "parent": _id(message.parent_id),
        "role": message.role,
        "content": message.content,
        "seq": message.content_seq,
        "status": message.status,
        "finish_reason": message.finish_reason or None,
        "error": gettext(message.error) if message.error else None,  # a reason Djinn wrote: translated
        "model": message.model,
        "usage": {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
            "cached_tokens": message.cached_tokens,
        },
        "ttft_ms": message.ttft_ms,
        "duration_ms": message.duration_ms,
        "feedback": message.feedback,
        "attachments": message.attachments or [],
        "sources": [
            {key: source.get(key) for key in ("document", "name", "part", "page", "text")}
            for source in message.sources or []
        ],
        "created_at": _time(message.created_at),
    }


def conversation_to_dict(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.pk),
        "title": conversation.title,
        "title_is_provisional": conversation.title_is_provisional,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "project": _id(conversation.project_id),
        "params": conversation.params or {},
        "pinned": conversation.pinned,
        "archived": conversation.archived,
        "current_leaf": _id(conversation.current_leaf_id),
        "created_at": _time(conversation.created_at),
        "updated_at": _time(conversation.updated_at),
    }


def branch_to_list(branch: list[BranchMessage]) -> list[dict[str, Any]]:
    """The shown branch, root first; each message with ``sibling_index`` (0-based), ``sibling_count`` and
    ``sibling_ids`` (oldest first) for the ``< 2/3 >`` switcher."""
    return [
        message_to_dict(entry.message)
        | {
            "sibling_index": entry.sibling_index,
            "sibling_count": entry.sibling_count,
            "sibling_ids": entry.sibling_ids,
        }
        for entry in branch
    ]


def _id(value: object) -> str | None:
    return None if value is None else str(value)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
