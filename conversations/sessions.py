"""A user's open chat sockets end with their session: logging out closes that session's sockets; changing the
password, deactivation and deletion close the sockets of every other session at once (each tab then goes to
the login page, as its next request would).

The signals (Django's ``user_logged_out``, and saving or deleting a User) send ``session.check`` to the user's
channel-layer group once the change is committed. Each socket of the user then checks its own session as a
request would (``django.contrib.auth.get_user``: the session still there, the password hash it holds still
the user's, the user still active) and closes with 4401 if it no longer signs anyone in. The session the change
was made from is kept (Django keeps it signed in after a password change).
"""

from __future__ import annotations

import logging
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.middleware import current_session_key
from accounts.models import User

logger = logging.getLogger(__name__)

# What a save that may end sessions touches (update_fields); a save of every field (None) may touch them too.
_SESSION_FIELDS = {"password", "is_active"}


def sockets_check_sessions(user_id: int, *, ended: str | None = None, keep: str | None = None) -> None:
    """Once the current transaction commits, ask the user's open sockets to check their sessions: the one
    whose session is ``ended`` closes, the one of session ``keep`` stays, the others close if theirs no longer
    signs the user in. Best effort: without Redis the sockets are not told (and their next request fails)."""
    from conversations.consumers import user_group  # the consumers' module imports this one

    event = {"type": "session.check", "ended": ended, "keep": keep}

    def send() -> None:
        try:
            async_to_sync(get_channel_layer().group_send)(user_group(user_id), event)
        except Exception as exc:  # the channel layer is Redis: whatever it raises, the change itself stands
            logger.warning("Could not tell the open sockets of user %s to check their sessions: %s", user_id, exc)

    transaction.on_commit(send)


def session_signs_in(session_key: str | None, user_id: int) -> bool:
    """Whether session ``session_key`` still signs in user ``user_id``, as a request carrying it would find.
    A session that does not (its password hash outdated) is flushed, as Django's get_user does."""
    if not session_key:
        return False
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = auth.get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
    return user.is_authenticated and user.pk == user_id


@receiver(user_logged_out, dispatch_uid="djinn-sockets-logged-out")
def _logged_out(sender: Any, request: Any, user: User | None, **kwargs: Any) -> None:
    if user is not None:
        sockets_check_sessions(user.pk, ended=request.session.session_key)


@receiver(post_save, sender=User, dispatch_uid="djinn-sockets-user-saved")
def _user_saved(sender: Any, instance: User, created: bool, update_fields: Any = None, **kwargs: Any) -> None:
    if created or (update_fields is not None and not _SESSION_FIELDS & set(update_fields)):
        return
    sockets_check_sessions(instance.pk, keep=current_session_key())


@receiver(post_delete, sender=User, dispatch_uid="djinn-sockets-user-deleted")
def _user_deleted(sender: Any, instance: User, **kwargs: Any) -> None:
    sockets_check_sessions(instance.pk)
