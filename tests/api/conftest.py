"""Shared API fixtures: users with keys and DRF clients that authenticate with them.

``api_client`` acts as ``api_user`` through ``Authorization: Bearer <api_key>``; ``other_api_client``
is a second, unrelated user for cross-user checks; ``make_api_client(user)`` makes more.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from accounts import services
from accounts.models import User
from tests.factories import UserFactory


def client_with_key(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def make_api_client(db) -> Callable[[User], APIClient]:
    """A client with a fresh key of ``user``; the key is on the client as ``client.api_key``."""

    def make(user: User) -> APIClient:
        _api_key, key = services.api_key_create(user=user, name="test key")
        client = client_with_key(key)
        client.api_key = key
        return client

    return make


@pytest.fixture
def api_user(db) -> User:
    return UserFactory(email="ada@example.com", display_name="Ada Lovelace")


@pytest.fixture
def api_key(api_user) -> str:
    """The whole key (plaintext) of one of ``api_user``'s keys."""
    _api_key, key = services.api_key_create(user=api_user, name="test key")
    return key


@pytest.fixture
def api_client(api_key) -> APIClient:
    return client_with_key(api_key)


@pytest.fixture
def other_api_user(db) -> User:
    return UserFactory(email="grace@example.com", display_name="Grace Hopper")


@pytest.fixture
def other_api_client(make_api_client, other_api_user) -> APIClient:
    return make_api_client(other_api_user)


@pytest.fixture
def anonymous_api_client() -> APIClient:
    return APIClient()
