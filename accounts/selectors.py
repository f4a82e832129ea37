"""Account reads: who may chat, e-mail availability, API keys."""

from __future__ import annotations

import hmac
from functools import cache

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet

from accounts import api_keys, rows
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
    # Every API request comes through here, so the statement is built once (accounts.rows). It still runs
    # each time, so a revoked key stops at once.
    sql, key_columns, user_columns = _api_key_statement()
    found = rows.fetch(ApiKey, sql, [prefix])
    if not found:
        return None
    row = found[0]
    api_key = key_columns.instance(row[: len(key_columns)])
    if not hmac.compare_digest(api_key.key_hash, api_keys.key_hash(key)):
        return None
    api_key.user = user_columns.instance(row[len(key_columns) :])
    return api_key


@cache
def _api_key_statement() -> tuple[str, rows.Columns[ApiKey], rows.Columns[User]]:
    """SELECT a working key by prefix with its active user, as ``select_related("user")`` would, and the
    columns of each half of a row."""
    key_columns, user_columns = rows.Columns(ApiKey), rows.Columns(User)
    key_table, user_table = ApiKey._meta.db_table, User._meta.db_table

    def qn(name: str) -> str:
        return rows.quote(ApiKey, name)

    user_fk = ApiKey._meta.get_field("user").column
    sql = (
        f"SELECT {key_columns.select(key_table)}, {user_columns.select(user_table)} "
        f"FROM {qn(key_table)} INNER JOIN {qn(user_table)} "
        f"ON {qn(user_table)}.{qn(User._meta.pk.column)} = {qn(key_table)}.{qn(user_fk)} "
        f"WHERE {qn(key_table)}.{qn('prefix')} = %s AND {qn(key_table)}.{qn('revoked_at')} IS NULL "
        f"AND {qn(user_table)}.{qn('is_active')} LIMIT 1"
    )
    return sql, key_columns, user_columns
