"""Account writes: sign-up, e-mail verification and change, profile, password, deletion, API keys.

E-mails go out after the transaction commits, so a rolled-back write never mails a link to an
account that does not exist. A failed send is logged and does not undo the write: the banner and the
settings pages let the user ask for another link.

E-mail change keeps the old address until the new one is confirmed: the link goes to the new
address, and only clicking it switches the sign-in address (already verified, since the click proves
the mailbox). The old address is then told about the change.
"""

from __future__ import annotations

import logging
import smtplib
from functools import partial
from typing import Any
from urllib.parse import urljoin

import redis
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django_redis.exceptions import ConnectionInterrupted

from accounts import api_keys, tokens
from accounts.models import ApiKey, User, normalize_email

logger = logging.getLogger(__name__)


class EmailTakenError(Exception):
    """Another account already signs in with this e-mail address."""


def user_sign_up(*, email: str, password: str, display_name: str, base_url: str) -> User:
    """Create an unverified account and mail it a verification link.

    ``password`` must already have passed the password validators. ``base_url`` is the site's
    absolute root (``https://host/``) that links in the e-mail start with.
    """
    try:
        with transaction.atomic():
            user = User.objects.create_user(email=email, password=password, display_name=display_name.strip())
    except IntegrityError:  # the e-mail is the only unique column: another sign-up won the race
        raise EmailTakenError(email) from None
    logger.info("account created", extra={"user_id": user.pk})
    user_verification_send(user=user, base_url=base_url)
    return user


def user_verification_send(*, user: User, base_url: str) -> None:
    token = tokens.verification_token_make(user=user)
    link = urljoin(base_url, reverse("accounts:verify_email", kwargs={"token": token}))
    _mail_after_commit(to=user.email, template="accounts/email/verify", context={"user": user, "link": link})


def user_email_verify(*, token: str) -> User:
    """Mark the account in the link verified; clicking twice is harmless.

    Raises ``tokens.LinkExpired`` or ``tokens.LinkInvalid`` (also when the account's address has
    changed since the link was sent, or the account is gone).
    """
    claim = tokens.verification_token_read(token=token)
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=claim.user_id, is_active=True).first()
        if user is None or user.email != claim.email:
            raise tokens.LinkInvalid
        if user.email_verified_at is None:
            user.email_verified_at = timezone.now()
            user.save(update_fields=["email_verified_at"])
            logger.info("e-mail verified", extra={"user_id": user.pk})
    return user


def user_email_change_request(*, user: User, new_email: str, base_url: str) -> None:
    """Mail a confirmation link to ``new_email``; the account keeps its current address until it is clicked.

    The caller has checked the user's password and that ``new_email`` is free.
    """
    new_email = normalize_email(new_email)
    token = tokens.email_change_token_make(user=user, new_email=new_email)
    link = urljoin(base_url, reverse("accounts:email_change_confirm", kwargs={"token": token}))
    context = {"user": user, "link": link, "new_email": new_email}
    _mail_after_commit(to=new_email, template="accounts/email/email_change", context=context)
    logger.info("e-mail change requested", extra={"user_id": user.pk})


def user_email_change_confirm(*, token: str) -> User:
    """Switch the account to the address in the link, verified, and tell the old address.

    Raises ``tokens.LinkExpired`` / ``tokens.LinkInvalid`` (also when the account's address changed
    after the link was sent, so every link works once), or ``EmailTakenError`` when another account
    took the new address in the meantime.
    """
    claim = tokens.email_change_token_read(token=token)
    try:
        with transaction.atomic():
            user = User.objects.select_for_update().filter(pk=claim.user_id, is_active=True).first()
            if user is None or user.email != claim.old_email:
                raise tokens.LinkInvalid
            if User.objects.filter(email=claim.new_email).exclude(pk=user.pk).exists():
                raise EmailTakenError(claim.new_email)
            user.email = claim.new_email
            user.email_verified_at = timezone.now()
            user.save(update_fields=["email", "email_verified_at"])
    except IntegrityError:  # taken between the check and the write
        raise EmailTakenError(claim.new_email) from None
    logger.info("e-mail changed", extra={"user_id": user.pk})
    _mail_after_commit(
        to=claim.old_email,
        template="accounts/email/email_changed",
        context={"user": user, "old_email": claim.old_email, "new_email": claim.new_email},
    )
    return user


def user_profile_update(*, user: User, display_name: str, custom_instructions: str, language: str) -> User:
    """``language`` is a code of settings.LANGUAGES, or blank for the browser's language."""
    user.display_name = display_name.strip()
    user.custom_instructions = custom_instructions.strip()
    user.language = language
    user.save(update_fields=["display_name", "custom_instructions", "language"])
    return user


def user_password_change(*, user: User, password: str) -> None:
    """``password`` must already have passed the validators. Other sessions of the user end, since
    their session hash no longer matches; the caller keeps the current one with update_session_auth_hash."""
    user.set_password(password)
    user.save(update_fields=["password"])
    logger.info("password changed", extra={"user_id": user.pk})


def user_delete(*, user: User) -> None:
    """Delete the account and everything that belongs to it (foreign keys cascade; usage records are kept,
    detached). A Stripe subscription it pays for is cancelled first, so it is charged no more."""
    from accounts.billing import payments  # billing builds on this module

    user_id = user.pk
    payments.subscription_cancel_for_deleted(user=user)
    user.delete()
    logger.info("account deleted", extra={"user_id": user_id})


# API keys ------------------------------------------------------------------------------------------


def api_key_create(*, user: User, name: str = "") -> tuple[ApiKey, str]:
    """Create a key for ``user``; return it with the whole key, which exists only in this return value.

    The caller shows the key once and forgets it: only its prefix and hash are stored.
    """
    for _attempt in range(3):
        new = api_keys.key_generate()
        try:
            with transaction.atomic():
                api_key = ApiKey.objects.create(user=user, name=name.strip(), prefix=new.prefix, key_hash=new.key_hash)
        except IntegrityError:  # the prefix is taken (1 in 62**8 per existing key): draw again
            continue
        logger.info("api key created", extra={"user_id": user.pk, "api_key_id": api_key.pk})
        return api_key, new.key
    raise RuntimeError("Could not find a free API key prefix in 3 tries; is the random source broken?")


def api_key_revoke(*, api_key: ApiKey) -> bool:
    """Revoke ``api_key`` at once: the next request that presents it fails. True when this call revoked it,
    False when it already was. The caller has checked that the key is the acting user's (or an admin acts)."""
    now = timezone.now()
    revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now) == 1
    if revoked:
        api_key.revoked_at = now
        logger.info("api key revoked", extra={"user_id": api_key.user_id, "api_key_id": api_key.pk})
    return revoked


def api_key_mark_used(*, api_key: ApiKey) -> None:
    """Record that ``api_key`` authenticated a request, writing at most once per LAST_USED_INTERVAL_S.

    ``api_key`` was just read, so a recent ``last_used_at`` on it settles most requests without a round
    trip. Past the interval, a Redis key (SET NX EX) lets one request of a concurrent burst write, so a
    burst costs one UPDATE, not one each.
    """
    interval = api_keys.LAST_USED_INTERVAL_S
    now = timezone.now()
    if api_key.last_used_at is not None and (now - api_key.last_used_at).total_seconds() < interval:
        return
    try:
        if not cache.add(f"api-key-used:{api_key.pk}", 1, timeout=interval):
            return
    except (ConnectionInterrupted, redis.RedisError):
        # Redis is away: the key still works; its "last used" waits for the next request after Redis is back.
        logger.warning("api key %s: last use not recorded (cache unreachable)", api_key.pk)
        return
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now


def _mail_after_commit(*, to: str, template: str, context: dict[str, Any]) -> None:
    """The e-mail is written in the account's language, else in the one of the page that sent it."""
    user = context.get("user")
    language = getattr(user, "language", "") or translation.get_language()
    transaction.on_commit(partial(_mail, to=to, template=template, context=context, language=language))


def _mail(*, to: str, template: str, context: dict[str, Any], language: str) -> None:
    with translation.override(language):
        context = {**context, "link_lifetime": tokens.link_lifetime()}
        subject = " ".join(render_to_string(f"{template}_subject.txt", context).split())
        body = render_to_string(f"{template}.txt", context)
    try:
        send_mail(subject, body, None, [to])
    except (smtplib.SMTPException, OSError):
        logger.exception("e-mail not sent", extra={"template": template})
