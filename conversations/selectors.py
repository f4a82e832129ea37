"""Reads. Every public selector takes the requesting user and never returns another user's rows: an id
that exists but belongs to someone else raises NotFound exactly like an unknown one."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db.models import Exists, OuterRef, Q, QuerySet

from accounts.models import User
from conversations.errors import NotFound
from conversations.models import SEARCH_CONFIG, Conversation, Message

_WORD = re.compile(r"\w+")
_MAX_SEARCH_TERMS = 8


@dataclass(frozen=True)
class BranchMessage:
    """A message on the shown branch, with where it sits among its siblings (``< 2/3 >``)."""

    message: Message
    sibling_index: int  # 0-based position among the siblings, oldest first
    sibling_count: int
    sibling_ids: list[str]


def conversation_list(*, user: User, archived: bool = False, query: str | None = None) -> QuerySet[Conversation]:
    """The user's conversations, pinned first, then the most recently active.

    ``query``: full-text search over titles and message contents; each word matches as a prefix
    ("pyth" finds "python"), all words must match (in the title or in one message).
    """
    conversations = Conversation.objects.filter(owner=user, archived=archived).order_by("-pinned", "-updated_at")
    search = _search_query(query or "")
    if search is None:
        return conversations
    in_messages = (
        Message.objects.filter(conversation=OuterRef("pk"))
        .annotate(document=SearchVector("content", config=SEARCH_CONFIG))
        .filter(document=search)
    )
    return conversations.annotate(document=SearchVector("title", config=SEARCH_CONFIG)).filter(
        Q(document=search) | Exists(in_messages)
    )


def conversation_get(*, user: User, conversation_id: UUID | str, lock: bool = False) -> Conversation:
    """``lock``: SELECT ... FOR UPDATE (inside the caller's transaction), in the same one query."""
    conversations = Conversation.objects.select_for_update() if lock else Conversation.objects
    conversation = conversations.filter(owner=user, pk=_uuid(conversation_id)).first()
    if conversation is None:
        raise NotFound("Conversation not found.")
    return conversation


def conversation_branch(*, user: User, conversation: Conversation) -> list[BranchMessage]:
    """The shown branch, root first, down to the current leaf."""
    if conversation.owner_id != user.pk:
        raise NotFound("Conversation not found.")
    if conversation.current_leaf_id is None:
        return []
    tree = _tree(conversation.pk)
    path = _path_ids(tree, conversation.current_leaf_id)
    messages = Message.objects.in_bulk(path)
    children = _children(tree)
    branch = []
    for message_id in path:
        siblings = children[tree[message_id][0]]
        branch.append(
            BranchMessage(
                message=messages[message_id],
                sibling_index=siblings.index(message_id),
                sibling_count=len(siblings),
                sibling_ids=[str(s) for s in siblings],
            )
        )
    return branch


def message_get(*, user: User, message_id: UUID | str) -> Message:
    message = (
        Message.objects.select_related("conversation").filter(conversation__owner=user, pk=_uuid(message_id)).first()
    )
    if message is None:
        raise NotFound("Message not found.")
    return message


def generation_get(*, user: User, generation_id: UUID | str) -> Message:
    """The assistant message whose stream is ``djinn:gen:<generation_id>``: check this before any XREAD."""
    message = (
        Message.objects.select_related("conversation")
        .filter(conversation__owner=user, role=Message.Role.ASSISTANT, pk=_uuid(generation_id))
        .first()
    )
    if message is None:
        raise NotFound("Generation not found.")
    return message


# Unscoped helpers for services and tasks, which have already checked who may see the conversation.


def branch_path(*, conversation_id: UUID, leaf_id: UUID) -> list[Message]:
    """Messages from the root down to ``leaf_id`` (included), in order."""
    path = _path_ids(_tree(conversation_id), leaf_id)
    messages = Message.objects.in_bulk(path)
    return [messages[message_id] for message_id in path]


def newest_leaf(*, conversation_id: UUID, message_id: UUID) -> UUID:
    """The most recently created leaf among ``message_id`` and its descendants."""
    tree = _tree(conversation_id)
    children = _children(tree)
    leaves = []
    stack = [message_id]
    while stack:
        node = stack.pop()
        below = children.get(node)
        if below:
            stack.extend(below)
        else:
            leaves.append(node)
    return max(leaves, key=lambda node: (tree[node][1], str(node)))


def _tree(conversation_id: UUID) -> dict[UUID, tuple[UUID | None, datetime]]:
    """Every message of the conversation: id -> (parent id, created_at). Ids only, no content."""
    rows = Message.objects.filter(conversation_id=conversation_id).values_list("id", "parent_id", "created_at")
    return {message_id: (parent_id, created_at) for message_id, parent_id, created_at in rows}


def _children(tree: dict[UUID, tuple[UUID | None, datetime]]) -> dict[UUID | None, list[UUID]]:
    """parent id (None for roots) -> child ids, oldest first."""
    children: dict[UUID | None, list[UUID]] = {}
    for message_id, (parent_id, _created) in sorted(tree.items(), key=lambda item: (item[1][1], str(item[0]))):
        children.setdefault(parent_id, []).append(message_id)
    return children


def _path_ids(tree: dict[UUID, tuple[UUID | None, datetime]], leaf_id: UUID) -> list[UUID]:
    path: list[UUID] = []
    node: UUID | None = leaf_id
    while node is not None:
        path.append(node)
        node = tree[node][0]
    return path[::-1]


def _uuid(value: Any) -> UUID:
    try:
        return value if isinstance(value, UUID) else uuid.UUID(str(value))
    except ValueError:
        raise NotFound("Not found.") from None


def _search_query(text: str) -> SearchQuery | None:
    # Words only, so nothing the user types can break the tsquery syntax.
    words = _WORD.findall(text.lower())[:_MAX_SEARCH_TERMS]
    if not words:
        return None
    return SearchQuery(" & ".join(f"{word}:*" for word in words), config=SEARCH_CONFIG, search_type="raw")
