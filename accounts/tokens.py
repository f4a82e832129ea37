"""Signed links for e-mail verification and e-mail change.

A link carries its claim (which account, which address) signed with the secret key and a timestamp,
so nothing is stored until it is clicked. Each claim names the address the account had when the link
was sent: once that address changes, older links stop working. Links expire after
``PASSWORD_RESET_TIMEOUT`` seconds, like password-reset links.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.utils.translation import ngettext

from accounts.models import User

_VERIFY_SALT = "djinn.accounts.verify-email"
_CHANGE_SALT = "djinn.accounts.change-email"


class LinkError(Exception):
    """A verification or e-mail-change link cannot be used."""


class LinkExpired(LinkError):
    """The signature is good but older than PASSWORD_RESET_TIMEOUT."""


class LinkInvalid(LinkError):
    """Tampered, truncated, or no longer matching the account."""


@dataclass(frozen=True)
class VerificationClaim:
    user_id: int
    email: str


@dataclass(frozen=True)
class EmailChangeClaim:
    user_id: int
    old_email: str
    new_email: str


def link_lifetime() -> str:
    """How long a link works, in words for e-mails and pages: "24 hours", "1 hour", "30 minutes" (in the active
    language)."""
    minutes = max(settings.PASSWORD_RESET_TIMEOUT // 60, 1)
    if minutes % 60:
        return ngettext("%(count)d minute", "%(count)d minutes", minutes) % {"count": minutes}
    hours = minutes // 60
    return ngettext("%(count)d hour", "%(count)d hours", hours) % {"count": hours}


def verification_token_make(*, user: User) -> str:
    return signing.dumps({"u": user.pk, "e": user.email}, salt=_VERIFY_SALT)


def verification_token_read(*, token: str) -> VerificationClaim:
    data = _load(token, salt=_VERIFY_SALT, keys=("u", "e"))
    return VerificationClaim(user_id=data["u"], email=data["e"])


def email_change_token_make(*, user: User, new_email: str) -> str:
    """``new_email`` must already be normalized (lower-cased)."""
    return signing.dumps({"u": user.pk, "o": user.email, "n": new_email}, salt=_CHANGE_SALT)


def email_change_token_read(*, token: str) -> EmailChangeClaim:
    data = _load(token, salt=_CHANGE_SALT, keys=("u", "o", "n"))
    return EmailChangeClaim(user_id=data["u"], old_email=data["o"], new_email=data["n"])


def _load(token: str, *, salt: str, keys: tuple[str, ...]) -> dict[str, Any]:
    try:
        data = signing.loads(token, salt=salt, max_age=settings.PASSWORD_RESET_TIMEOUT)
    except signing.SignatureExpired:
        raise LinkExpired from None
    except signing.BadSignature:
        raise LinkInvalid from None
    # A good signature means we wrote it; the shape check guards against a salt reused elsewhere.
    if not isinstance(data, dict) or any(key not in data for key in keys):
        raise LinkInvalid
    return data
