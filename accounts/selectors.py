"""Account reads: who may chat, e-mail availability, API keys."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet

from accounts import api_keys
from accounts.models import ApiKey, User, normalize_email


def user_can_chat(user: User | AnonymousUser) -> bool:
    """True for an active signed-in user, who must also be verified when DJINN_REQUIRE_EMAIL_VERIFICATION is on."""
    if not user.is_authenticated or not user.is_active:
        return False
    return user.email_verified or not settings.DJINN_REQUIRE_EMAIL_VERIFICATION


def email_is_taken(*, email: str, exclude_user_id: int | None = None) -> bool:
    """Whether another account signs in with ``email`` (compared case-insensitively)."""
    others = User.objects.filter(email=normalize_email(email))
    if exclude_user_id is not None:
        others = others.exclude(pk=exclude_user_id)
    return others.exists()


def api_key_list(*, user: User) -> QuerySet[ApiKey]:
    """The user's keys that still work, newest first."""
    return ApiKey.objects.filter(user=user, revoked_at__isnull=True).order_by("-created_at", "-pk")


def api_key_get(*, user: User, api_key_id: int) -> ApiKey:
    """One of the user's working keys; raises ApiKey.DoesNotExist for another user's, a revoked or no key."""
    return api_key_list(user=user).get(pk=api_key_id)


def api_key_authenticate(*, key: str) -> ApiKey | None:
    """The working key of an active user that ``key`` is, with its user loaded; None for anything else.

    Looked up by its public prefix, then the hash compared in constant time, so the response time
    tells nothing about how much of a guessed secret was right.
    """
    prefix = api_keys.key_prefix(key)
    if prefix is None:
        return None
    api_key = (
        ApiKey.objects.select_related("user")
        .filter(prefix=prefix, revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if api_key is None or not hmac.compare_digest(api_key.key_hash, api_keys.key_hash(key)):
        return None
    return api_key
