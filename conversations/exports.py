"""Export your data: every conversation of a user, every branch, as one ZIP.

``conversations.json`` holds everything (conversations with their settings and every message, with the
parent each one answers, so branches can be rebuilt); ``markdown/`` holds one readable file per conversation,
its branch as shown. Built by the ``export_build`` task on the ``default`` queue, stored in PostgreSQL
(DataExport.archive) and kept EXPORT_KEEP_DAYS for download.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from conversations import presenters, selectors
from conversations.errors import InvalidInput, NotFound
from conversations.models import Conversation, DataExport, Message, Project

EXPORT_KEEP_DAYS = 7
EXPORTS_PER_DAY = 5  # requests a user may make in a day (each reads all their conversations)
EXPORT_BUILD_TIMEOUT = timedelta(minutes=30)
FORMAT_VERSION = 1
_SLUG = re.compile(r"[^a-z0-9]+")


def export_request(*, user: User) -> DataExport:
    """A new export, pending, for the task to build. Raises InvalidInput past EXPORTS_PER_DAY a day, or while
    one is still being built."""
    export_forget_old(user=user)
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user.pk).first()  # one request of this user at a time
        recent = DataExport.objects.filter(owner=user, created_at__gte=timezone.now() - timedelta(days=1))
        if any(export.status == DataExport.Status.PENDING for export in recent):
            raise InvalidInput(_("An export is already being prepared: it appears here when it is ready."))
        if len(recent) >= EXPORTS_PER_DAY:
            raise InvalidInput(
                _("You can export your data %(count)d times a day: try again tomorrow.") % {"count": EXPORTS_PER_DAY}
            )
        return DataExport.objects.create(owner=user)


def export_list(*, user: User) -> QuerySet[DataExport]:
    """The user's exports still kept, newest first (without their archives)."""
    return DataExport.objects.filter(owner=user).defer("archive")


def export_get_ready(*, user: User, export_id: int) -> DataExport:
    export = DataExport.objects.filter(owner=user, pk=export_id, status=DataExport.Status.READY).first()
    if export is None:
        raise NotFound(_("Export not found."))
    return export


def export_forget_old(*, user: User | None = None) -> int:
    """Delete exports older than EXPORT_KEEP_DAYS (one user's, or everyone's), and mark failed the ones still
    pending after EXPORT_BUILD_TIMEOUT (their worker died: the page must not wait for them for ever)."""
    now = timezone.now()
    mine = DataExport.objects.all() if user is None else DataExport.objects.filter(owner=user)
    mine.filter(status=DataExport.Status.PENDING, created_at__lt=now - EXPORT_BUILD_TIMEOUT).update(
        status=DataExport.Status.FAILED, error="Not built in time (its worker stopped).", finished_at=now
    )
    return mine.filter(created_at__lt=now - timedelta(days=EXPORT_KEEP_DAYS)).delete()[0]


def export_build(export_id: int) -> None:
    """Build the archive of a pending export (the task's body). Idempotent: a ready export is left alone."""
    export = DataExport.objects.select_related("owner").filter(pk=export_id).first()
    if export is None or export.status == DataExport.Status.READY:
        return
    try:
        archive, count = build_archive(export.owner)
    except Exception as exc:
        DataExport.objects.filter(pk=export_id).update(
            status=DataExport.Status.FAILED, error=str(exc)[:500], finished_at=timezone.now()
        )
        raise
    DataExport.objects.filter(pk=export_id).update(
        status=DataExport.Status.READY,
        archive=archive,
        size_bytes=len(archive),
        conversations=count,
        finished_at=timezone.now(),
    )


def build_archive(user: User) -> tuple[bytes, int]:
    """The ZIP's bytes and how many conversations it holds."""
    conversations = list(Conversation.objects.filter(owner=user).order_by("created_at"))
    messages: dict[Any, list[Message]] = {}
    for message in Message.objects.filter(conversation__owner=user).order_by("created_at"):
        messages.setdefault(message.conversation_id, []).append(message)
    document = {
        "format": "djinn-export",
        "version": FORMAT_VERSION,
        "exported_at": timezone.now().isoformat(),
        "user": {"email": user.email, "display_name": user.display_name},
        "projects": [
            {"id": str(p.pk), "name": p.name, "instructions": p.instructions, "created_at": p.created_at.isoformat()}
            for p in Project.objects.filter(owner=user).order_by("created_at")
        ],
        "conversations": [
            {**presenters.conversation_to_dict(c), "messages": [_message(m) for m in messages.get(c.pk, [])]}
            for c in conversations
        ],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", json.dumps(document, ensure_ascii=False, indent=2))
        for conversation in conversations:
            branch = selectors.conversation_branch(user=user, conversation=conversation)
            archive.writestr(_markdown_name(conversation), _markdown(conversation, [e.message for e in branch]))
        archive.writestr("README.txt", _README)
    return buffer.getvalue(), len(conversations)


def _message(message: Message) -> dict[str, Any]:
    data = presenters.message_to_dict(message)
    data.pop("seq", None)
    data.pop("conversation", None)
    return data


def _markdown_name(conversation: Conversation) -> str:
    slug = _SLUG.sub("-", (conversation.title or "chat").lower()).strip("-")[:60] or "chat"
    return f"markdown/{conversation.created_at:%Y-%m-%d}-{slug}-{str(conversation.pk)[:8]}.md"


def _markdown(conversation: Conversation, branch: list[Message]) -> str:
    lines = [f"# {conversation.title or 'New chat'}", "", f"Started {conversation.created_at:%Y-%m-%d %H:%M} UTC"]
    if conversation.system_prompt:
        lines += ["", "System prompt:", "", *(f"> {line}" for line in conversation.system_prompt.splitlines())]
    for message in branch:
        who = "You" if message.role == Message.Role.USER else f"Djinn ({message.model})" if message.model else "Djinn"
        lines += ["", f"## {who}", "", message.content or f"*({message.get_status_display().lower()})*"]
    return "\n".join(lines) + "\n"


_README = """Your conversations, exported from Djinn.

conversations.json  everything: each conversation with its settings and every message of every branch
                    (a message's "parent" is the message it follows; "current_leaf" ends the branch shown)
markdown/           one file per conversation: the branch that was shown, readable as it is
"""
