"""Account reads: who may chat, e-mail availability, API keys."""

from __future__ import annotations

import hmac
from functools import cache

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import connections, router
from django.db.models import Model, QuerySet

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
    # Every API request comes through here, so the statement is built once: the ORM spent more CPU building
    # this query than PostgreSQL took to run it. It still runs each time, so a revoked key stops at once.
    alias = router.db_for_read(ApiKey)
    sql, key_fields, user_fields = _api_key_statement(connections[alias].vendor)
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    api_key = _from_row(ApiKey, alias, key_fields, row[: len(key_fields)])
    if not hmac.compare_digest(api_key.key_hash, api_keys.key_hash(key)):
        return None
    api_key.user = _from_row(User, alias, user_fields, row[len(key_fields) :])
    return api_key


@cache
def _api_key_statement(vendor: str) -> tuple[str, list, list]:
    """SELECT a working key by prefix with its active user, as ``select_related("user")`` would, and the fields
    each half of a row fills."""
    key_fields, user_fields = ApiKey._meta.concrete_fields, User._meta.concrete_fields
    qn = connections[router.db_for_read(ApiKey)].ops.quote_name
    key_table, user_table = qn(ApiKey._meta.db_table), qn(User._meta.db_table)
    columns = [f"{key_table}.{qn(f.column)}" for f in key_fields] + [
        f"{user_table}.{qn(f.column)}" for f in user_fields
    ]
    user_fk = qn(ApiKey._meta.get_field("user").column)
    sql = (
        f"SELECT {', '.join(columns)} FROM {key_table} INNER JOIN {user_table} "
        f"ON {user_table}.{qn(User._meta.pk.column)} = {key_table}.{user_fk} "
        f"WHERE {key_table}.{qn('prefix')} = %s AND {key_table}.{qn('revoked_at')} IS NULL "
        f"AND {user_table}.{qn('is_active')} LIMIT 1"
    )
    return sql, list(key_fields), list(user_fields)


def _from_row(model: type[Model], alias: str, fields: list, values: tuple) -> Model:
    """A model instance from raw column values, converted as the ORM converts them (e.g. time zones)."""
    connection = connections[alias]
    converted = []
    for field, value in zip(fields, values, strict=True):
        for converter in connection.ops.get_db_converters(field) + field.get_db_converters(connection):
            value = converter(value, field, connection)
        converted.append(value)
    return model.from_db(alias, [f.attname for f in fields], converted)
