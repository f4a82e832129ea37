"""Account reads."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from accounts.models import User, normalize_email


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
