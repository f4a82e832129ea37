"""Login rate limits, counted in Redis through the Django cache.

Failed log-ins are counted per account (the e-mail typed, whether or not it exists, so the limit
reveals nothing) and per client IP, each in a fixed 15-minute window that starts at the first
failure. While either counter is at its limit, log-in is refused without checking the password.
A successful log-in clears the account's counter; the IP counter runs out on its own.

The IP is ``REMOTE_ADDR``: behind a reverse proxy, run uvicorn with ``--proxy-headers`` and
``--forwarded-allow-ips`` so that it is the client's address, not the proxy's.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache

from accounts.models import normalize_email

WINDOW_SECONDS = 15 * 60
RESEND_COOLDOWN_SECONDS = 60


def _account_key(email: str) -> str:
    # Hashed: cache keys should not hold e-mail addresses, and typed input can be any length.
    digest = hashlib.sha256(normalize_email(email).encode()).hexdigest()
    return f"login-failures:account:{digest}"


def _ip_key(ip: str) -> str:
    return f"login-failures:ip:{ip}"


def login_blocked_seconds(*, email: str, ip: str) -> int:
    """Seconds until this e-mail may try again from this IP; 0 when log-in is allowed now."""
    limits = {_account_key(email): settings.LOGIN_RATE_LIMIT_PER_ACCOUNT, _ip_key(ip): settings.LOGIN_RATE_LIMIT_PER_IP}
    counts = cache.get_many(list(limits))
    waits = [_seconds_left(key) for key, limit in limits.items() if counts.get(key, 0) >= limit]
    return max(waits, default=0)


def login_failure_record(*, email: str, ip: str) -> None:
    _increment(_account_key(email))
    _increment(_ip_key(ip))


def login_success_record(*, email: str) -> None:
    cache.delete(_account_key(email))


def verification_resend_allowed(*, user_id: int) -> bool:
    """At most one verification e-mail a minute per account, so the button cannot flood an inbox."""
    return cache.add(f"verification-resend:{user_id}", 1, timeout=RESEND_COOLDOWN_SECONDS)


def _increment(key: str) -> int:
    # add() is SET NX EX, so the window starts with the first failure; incr() keeps the expiry.
    if cache.add(key, 1, timeout=WINDOW_SECONDS):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # the window ended between add() and incr(): this failure opens a new one
        cache.add(key, 1, timeout=WINDOW_SECONDS)
        return 1


def _seconds_left(key: str) -> int:
    ttl = cache.ttl(key)  # django-redis: None for a key without expiry, 0 when gone
    return WINDOW_SECONDS if ttl is None else max(ttl, 1)
