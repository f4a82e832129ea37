"""Every environment variable Djinn reads goes through these helpers.

A bad value stops the process at start with a message that names the variable, instead of a
traceback deep inside Django or a silent fallback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote, urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use 1/0, true/false, yes/no or on/off.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum of {minimum}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None or value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of: {', '.join(choices)}.")
    return value


def env_url(name: str, schemes: tuple[str, ...]) -> str | None:
    """A URL whose scheme is one of ``schemes``, or None when the variable is unset or empty."""
    value = _raw(name)
    if not value:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in schemes:
        raise ImproperlyConfigured(
            f"{name}={_redact(value)!r} is not a valid URL: it must start with one of "
            f"{', '.join(s + '://' for s in schemes)}."
        )
    if parsed.scheme not in {"unix", "redis+socket"} and not parsed.hostname and "host=" not in parsed.query:
        raise ImproperlyConfigured(f"{name}={_redact(value)!r} is not a valid URL: it names no host.")
    try:
        _ = parsed.port
    except ValueError:
        raise ImproperlyConfigured(f"{name}={_redact(value)!r} is not a valid URL: the port is not a number.") from None
    return value


def _redact(url: str) -> str:
    """Hide a password in a URL before it appears in an error message."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


def database_url(db: Mapping[str, object]) -> str:
    """A Django ``DATABASES`` entry as a ``DATABASE_URL``, for a child process that must use the same database
    (a unix-socket directory as host is percent-encoded, as libpq and dj-database-url expect)."""
    host = str(db.get("HOST") or "localhost")
    host = quote(host, safe="") if host.startswith("/") else host
    credentials = quote(str(db.get("USER") or ""), safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(str(db["PASSWORD"]), safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{db['NAME']}"
