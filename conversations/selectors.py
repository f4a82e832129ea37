"""Reads. Every public selector takes the requesting user and never returns another user's rows: an id
that exists but belongs to someone else raises NotFound exactly like an unknown one."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from uuid import UUID

from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db.models import Exists, OuterRef, Q, QuerySet

from accounts import rows
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
    sql, columns = _conversation_statement(lock)
    found = rows.fetch(Conversation, sql, [_uuid(conversation_id), user.pk])
    if not found:
        raise NotFound("Conversation not found.")
    return columns.instance(found[0])


def conversation_branch(*, user: User, conversation: Conversation) -> list[BranchMessage]:
    """The shown branch, root first, down to the current leaf."""
    if conversation.owner_id != user.pk:
        raise NotFound("Conversation not found.")
    if conversation.current_leaf_id is None:
        return []
    return [
        BranchMessage(
            message=message,
            sibling_index=siblings.index(message.pk),
            sibling_count=len(siblings),
            sibling_ids=[str(s) for s in siblings],
        )
        for message, siblings in _branch(conversation.pk, conversation.current_leaf_id)
    ]


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
    return [message for message, _siblings in _branch(conversation_id, leaf_id)]


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


def _branch(conversation_id: UUID, leaf_id: UUID) -> list[tuple[Message, list[UUID]]]:
    """The messages from the root down to ``leaf_id``, each with the ids of its siblings (itself included),
    oldest first: one statement, however long the branch."""
    sql, columns = _branch_statement()
    return [
        (columns.instance(row[:-1]), row[-1])
        for row in rows.fetch(Message, sql, [leaf_id, conversation_id, conversation_id])
    ]


@cache
def _conversation_statement(lock: bool) -> tuple[str, rows.Columns[Conversation]]:
    columns = rows.Columns(Conversation)
    table = Conversation._meta.db_table

    def qn(name: str) -> str:
        return rows.quote(Conversation, name)

    sql = (
        f"SELECT {columns.select(table)} FROM {qn(table)} "
        f"WHERE {qn(table)}.{qn('id')} = %s AND {qn(table)}.{qn('owner_id')} = %s" + (" FOR UPDATE" if lock else "")
    )
    return sql, columns


@cache
def _branch_statement() -> tuple[str, rows.Columns[Message]]:
    """Walk up from the leaf (recursive CTE); for each message, its siblings in the order _children gives
    them (created_at, then the id as text), found through the parent index (the conversation's for roots).
    Parameters: the leaf, its conversation, the conversation again (for the roots)."""
    columns = rows.Columns(Message)
    table = Message._meta.db_table

    def qn(name: str) -> str:
        return rows.quote(Message, name)

    def siblings(where: str) -> str:
        return (
            f"ARRAY(SELECT s.{qn('id')} FROM {qn(table)} s WHERE {where} "
            f"ORDER BY s.{qn('created_at')}, s.{qn('id')}::text)"
        )

    parent = qn("parent_id")
    roots = f"s.{qn('conversation_id')} = %s AND s.{parent} IS NULL"
    same_parent = f"s.{parent} = path.{parent}"
    sql = (
        f"WITH RECURSIVE path AS ("
        f"SELECT {columns.select('m')}, 0 AS depth FROM {qn(table)} m "
        f"WHERE m.{qn('id')} = %s AND m.{qn('conversation_id')} = %s "
        f"UNION ALL "
        f"SELECT {columns.select('m')}, path.depth + 1 FROM {qn(table)} m "
        f"INNER JOIN path ON m.{qn('id')} = path.{parent}"
        f") SELECT {columns.select('path')}, CASE WHEN path.{parent} IS NULL "
        f"THEN {siblings(roots)} ELSE {siblings(same_parent)} END "
        f"FROM path ORDER BY path.depth DESC"
    )
    return sql, columns


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
