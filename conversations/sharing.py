"""Sharing a conversation: a read-only link to a snapshot of the branch shown, revocable by its owner.

The link's token is 32 random bytes (URL-safe): it cannot be guessed, and it is the only key to the snapshot.
The snapshot holds the finished messages of the branch (a reply still being written, or one that failed, is
left out), copied, so nothing written later, and no other branch, is ever shown through the link.
"""

from __future__ import annotations

import secrets

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from conversations import selectors
from conversations.errors import InvalidInput, NotFound
from conversations.models import Message, SharedLink

SHOWN_STATUSES = {Message.Status.COMPLETED, Message.Status.CANCELLED}
MAX_LINKS = 200  # working links a user may hold (each holds a copy of a branch)


def share_create(*, user: User, conversation_id: str) -> SharedLink:
    """A new link to the conversation's branch as it is now. Raises NotFound, InvalidInput (nothing to show)."""
    conversation = selectors.conversation_get(user=user, conversation_id=conversation_id)
    branch = selectors.conversation_branch(user=user, conversation=conversation)
    messages: list[dict[str, str]] = []
    for entry in branch:
        message = entry.message
        if message.role != Message.Role.USER and message.status not in SHOWN_STATUSES:
            continue
        if message.role == Message.Role.ASSISTANT and messages and messages[-1]["role"] == Message.Role.ASSISTANT:
            messages[-1]["content"] += message.content  # a reply continued ("continue generating") reads as one
            continue
        messages.append(
            {
                "role": message.role,
                "content": message.content,
                "model": message.model if message.role == Message.Role.ASSISTANT else "",
                "created_at": message.created_at.isoformat(),
            }
        )
    if not any(message["role"] == Message.Role.ASSISTANT for message in messages):
        raise InvalidInput(_("There is nothing to share yet: wait for a reply first."))
    if share_list(user=user).count() >= MAX_LINKS:
        raise InvalidInput(
            _("You have %(count)d shared links: revoke some in Settings → Shared links first.") % {"count": MAX_LINKS}
        )
    return SharedLink.objects.create(
        token=secrets.token_urlsafe(32),
        conversation=conversation,
        owner=user,
        title=conversation.title or _("Shared chat"),
        messages=messages,
    )


def share_list(*, user: User) -> QuerySet[SharedLink]:
    """The user's links that still work, newest first."""
    return SharedLink.objects.filter(owner=user, revoked_at__isnull=True)


def share_revoke(*, user: User, share_id: int) -> SharedLink:
    """Stop a link working at once. Raises NotFound for another user's, a revoked or no link."""
    link = share_list(user=user).filter(pk=share_id).first()
    if link is None:
        raise NotFound(_("Shared link not found."))
    link.revoked_at = timezone.now()
    link.save(update_fields=["revoked_at"])
    return link


def share_get_public(*, token: str) -> SharedLink:
    """The link anyone holding ``token`` may read; NotFound once revoked (or its conversation deleted, or its
    owner's account deactivated)."""
    link = SharedLink.objects.filter(token=token, revoked_at__isnull=True, owner__is_active=True).first()
    if link is None:
        raise NotFound(_("This shared link does not exist or was revoked."))
    return link
