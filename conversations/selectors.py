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
from django.utils.translation import gettext as _

from accounts import rows
from accounts.models import User
from conversations.errors import InvalidInput, NotFound
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
    conversations = Conversation.objects.filter(owner=user, archived=archived).order_by("-pinned", "-updated_at", "-id")
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


def conversation_page(
    *, user: User, archived: bool = False, query: str | None = None, after: str | None = None, limit: int = 100
) -> tuple[list[Conversation], str | None]:
    """One page of conversation_list, by keyset: the conversations that come after the ``after`` cursor in
    its order, and the cursor of the page after this one (None on the last page). A cursor names a place in
    the order, not an offset, so a chat that moves to the top between two pages neither repeats nor hides
    another. A malformed cursor raises InvalidInput."""
    conversations = conversation_list(user=user, archived=archived, query=query)
    if after:
        pinned, updated_at, last_id = _parse_cursor(after)
        conversations = conversations.filter(
            Q(pinned__lt=pinned)
            | Q(pinned=pinned, updated_at__lt=updated_at)
            | Q(pinned=pinned, updated_at=updated_at, id__lt=last_id)
        )
    page = list(conversations[: limit + 1])
    if len(page) <= limit:
        return page, None
    page = page[:limit]
    last = page[-1]
    return page, f"{int(last.pinned)}_{last.updated_at.isoformat()}_{last.pk}"


def _parse_cursor(cursor: str) -> tuple[bool, datetime, UUID]:
    try:
        pinned, updated_at, last_id = cursor.split("_")
        if pinned not in {"0", "1"}:
            raise ValueError(pinned)
        when = datetime.fromisoformat(updated_at)
        if when.tzinfo is None:
            raise ValueError(updated_at)
        return pinned == "1", when, UUID(last_id)
    except ValueError:
        raise InvalidInput(_("after must be a cursor from an earlier page.")) from None


def conversation_get(*, user: User, conversation_id: UUID | str, lock: bool = False) -> Conversation:
    """``lock``: SELECT ... FOR UPDATE (inside the caller's transaction), in the same one query."""
    sql, columns = _conversation_statement(lock)
    found = rows.fetch(Conversation, sql, [_uuid(conversation_id), user.pk])
    if not found:
        raise NotFound(_("Conversation not found."))
    return columns.instance(found[0])


def conversation_with_branch(*, user: User, conversation_id: UUID | str) -> tuple[Conversation, list[BranchMessage]]:
    """conversation_get and conversation_branch in one statement (what the REST API's retrieve shows)."""
    sql, conversation_columns, message_columns = _detail_statement()
    conversation_id = _uuid(conversation_id)
    found = rows.fetch(Conversation, sql, [conversation_id, user.pk])
    if not found:
        raise NotFound(_("Conversation not found."))
    split = len(conversation_columns)
    conversation = conversation_columns.instance(found[0][:split])
    if found[0][split] is None:  # no message yet (the message id, first of its columns, is NULL)
        return conversation, []
    path = [(message_columns.instance(row[split:-1]), row[-1]) for row in found]
    return conversation, _with_siblings(path)


def conversation_branch(*, user: User, conversation: Conversation) -> list[BranchMessage]:
    """The shown branch, root first, down to the current leaf."""
    if conversation.owner_id != user.pk:
        raise NotFound(_("Conversation not found."))
    if conversation.current_leaf_id is None:
        return []
    return _with_siblings(_branch(conversation.pk, conversation.current_leaf_id))


def _with_siblings(path: list[tuple[Message, list[UUID]]]) -> list[BranchMessage]:
    return [
        BranchMessage(
            message=message,
            sibling_index=siblings.index(message.pk),
            sibling_count=len(siblings),
            sibling_ids=[str(s) for s in siblings],
        )
        for message, siblings in path
    ]


def message_get(*, user: User, message_id: UUID | str) -> Message:
    message = (
        Message.objects.select_related("conversation").filter(conversation__owner=user, pk=_uuid(message_id)).first()
    )
    if message is None:
        raise NotFound(_("Message not found."))
    return message


def generation_get(*, user: User, generation_id: UUID | str) -> Message:
    """The assistant message whose stream is ``djinn:gen:<generation_id>``: check this before any XREAD."""
    message = (
        Message.objects.select_related("conversation")
        .filter(conversation__owner=user, role=Message.Role.ASSISTANT, pk=_uuid(generation_id))
        .first()
    )
    if message is None:
        raise NotFound(_("Generation not found."))
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

    sql = (
        f"SELECT {columns.select(table)} FROM {_qn(table)} "
        f"WHERE {_qn(table)}.{_qn('id')} = %s AND {_qn(table)}.{_qn('owner_id')} = %s" + (" FOR UPDATE" if lock else "")
    )
    return sql, columns


def _branch_sql(seed: str, conversation: str) -> tuple[str, str, rows.Columns[Message]]:
    """The CTE ``path AS (...)`` (for a WITH RECURSIVE) walking up from the leaf that ``seed`` (a FROM ... that
    selects it as ``m``) finds; the select list of a path message followed by its siblings' ids in the order
    _children gives them (created_at, then the id as text), found through the parent index (through the
    conversation's for roots, ``conversation`` being the SQL of its id); the message columns."""
    columns = rows.Columns(Message)
    table = _qn(Message._meta.db_table)
    parent, id_ = _qn("parent_id"), _qn("id")

    def siblings(where: str) -> str:
        return f"ARRAY(SELECT s.{id_} FROM {table} s WHERE {where} ORDER BY s.{_qn('created_at')}, s.{id_}::text)"

    roots = f"s.{_qn('conversation_id')} = {conversation} AND s.{parent} IS NULL"
    path = (
        f"path AS (SELECT {columns.select('m')}, 0 AS depth {seed} "
        f"UNION ALL SELECT {columns.select('m')}, path.depth + 1 "
        f"FROM {table} m INNER JOIN path ON m.{id_} = path.{parent})"
    )
    select = (
        f"{columns.select('path')}, CASE WHEN path.{id_} IS NULL THEN NULL WHEN path.{parent} IS NULL "
        f"THEN {siblings(roots)} ELSE {siblings(f's.{parent} = path.{parent}')} END"
    )
    return path, select, columns


def _qn(name: str) -> str:
    return rows.quote(Message, name)  # conversations and messages live in the same database


@cache
def _branch_statement() -> tuple[str, rows.Columns[Message]]:
    """The branch up from a leaf. Parameters: the leaf, its conversation, the conversation again (roots)."""
    table, conversation = _qn(Message._meta.db_table), _qn("conversation_id")
    seed = f"FROM {table} m WHERE m.{_qn('id')} = %s AND m.{conversation} = %s"
    path, select, columns = _branch_sql(seed, "%s")
    return f"WITH RECURSIVE {path} SELECT {select} FROM path ORDER BY path.depth DESC", columns


@cache
def _detail_statement() -> tuple[str, rows.Columns[Conversation], rows.Columns[Message]]:
    """The conversation by id and owner, and the branch up from its current leaf: one row per message with
    the conversation's columns first, or one row of the conversation alone (message columns NULL) when it
    has none, or no row. Parameters: the conversation, its owner."""
    conversations = rows.Columns(Conversation)
    table = _qn(Conversation._meta.db_table)
    conversation = (
        f"conv AS (SELECT {conversations.select(Conversation._meta.db_table)} FROM {table} "
        f"WHERE {table}.{_qn('id')} = %s AND {table}.{_qn('owner_id')} = %s)"
    )
    seed = (
        f"FROM {_qn(Message._meta.db_table)} m INNER JOIN conv "
        f"ON m.{_qn('id')} = conv.{_qn('current_leaf_id')} "
        f"AND m.{_qn('conversation_id')} = conv.{_qn('id')}"
    )
    path, select, messages = _branch_sql(seed, f"conv.{_qn('id')}")
    sql = (
        f"WITH RECURSIVE {conversation}, {path} SELECT {conversations.select('conv')}, {select} "
        f"FROM conv LEFT JOIN path ON TRUE ORDER BY path.depth DESC"
    )
    return sql, conversations, messages


def _tree(conversation_id: UUID) -> dict[UUID, tuple[UUID | None, datetime]]:
    """Every message of the conversation: id -> (parent id, created_at). Ids only, no content."""
    found = Message.objects.filter(conversation_id=conversation_id).values_list("id", "parent_id", "created_at")
    return {message_id: (parent_id, created_at) for message_id, parent_id, created_at in found}


def _children(tree: dict[UUID, tuple[UUID | None, datetime]]) -> dict[UUID | None, list[UUID]]:
    """parent id (None for roots) -> child ids, oldest first."""
    children: dict[UUID | None, list[UUID]] = {}
    for message_id, (parent_id, _created) in sorted(tree.items(), key=lambda item: (item[1][1], str(item[0]))):
        children.setdefault(parent_id, []).append(message_id)
    return children


def _uuid(value: Any) -> UUID:
    try:
        return value if isinstance(value, UUID) else uuid.UUID(str(value))
    except ValueError:
        raise NotFound(_("Not found.")) from None


def _search_query(text: str) -> SearchQuery | None:
    # Words only, so nothing the user types can break the tsquery syntax.
    words = _WORD.findall(text.lower())[:_MAX_SEARCH_TERMS]
    if not words:
        return None
    return SearchQuery(" & ".join(f"{word}:*" for word in words), config=SEARCH_CONFIG, search_type="raw")
