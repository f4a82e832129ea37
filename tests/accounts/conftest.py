"""Fixtures for the account tests: a captured outbox, committed requests, links read from e-mails."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from urllib.parse import urlparse

import pytest
from django.core import mail
from django.core.cache import cache

from accounts.models import User
from tests.factories import DEFAULT_PASSWORD, UserFactory


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # PBKDF2 takes ~0.3 s a hash on these machines; the hasher is not what these tests are about.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    """Start every test with no login-failure or resend counters in Redis, whatever ran before.

    Only these keys: other suites may be using the same Redis at the same time."""
    for pattern in ("login-failures:*", "verification-resend:*"):
        cache.delete_pattern(pattern)


@pytest.fixture
def outbox(db, settings) -> list[mail.EmailMessage]:
    # After `db`: setting up the test database transaction replaces mail.outbox with a new list.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    return mail.outbox


@pytest.fixture
def committed(django_capture_on_commit_callbacks) -> Callable[[], AbstractContextManager]:
    """``with committed(): client.post(...)``: the test's transaction never commits, so run the
    after-commit callbacks (the e-mails) as a real commit would."""
    return partial(django_capture_on_commit_callbacks, execute=True)


def link_in(message: mail.EmailMessage) -> str:
    """The path of the single link in an e-mail body."""
    (url,) = re.findall(r"https?://\S+", message.body)
    return urlparse(url).path


@pytest.fixture
def user(db) -> User:
    return UserFactory(email="ada@example.com", display_name="Ada Lovelace")


@pytest.fixture
def unverified_user(db) -> User:
    return UserFactory(email="grace@example.com", display_name="Grace Hopper", email_verified_at=None)


@pytest.fixture
def password() -> str:
    return DEFAULT_PASSWORD
