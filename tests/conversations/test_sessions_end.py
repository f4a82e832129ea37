"""Open chat sockets end with their session (conversations.sessions): logging out closes that session's
sockets, changing the password closes the other sessions' (not the one it was changed from), deactivating or
deleting the user closes them all at once, with 4401 (the page then goes to the login)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client
from django.urls import reverse

from accounts import services
from config.asgi import application
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

# The close is immediate (a channel-layer message, then one session lookup); the bound leaves room for a
# loaded machine, as timed assertions must.
WITHIN_S = 5.0


@pytest.fixture(autouse=True)
def _setup(settings, monkeypatch) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)


def synchronously(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (as the other consumer tests do, with no async plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        async_to_sync(test)(*args, **kwargs)

    return run


@pytest.fixture
def user():
    return UserFactory()


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@asynccontextmanager
async def socket_of(client: Client) -> AsyncIterator[WebsocketCommunicator]:
    headers = [
        (b"origin", b"http://localhost"),
        (b"host", b"localhost"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]
    socket = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await socket.connect(timeout=5)
    assert connected
    try:
        yield socket
    finally:
        await socket.disconnect()


async def closed_signed_out(socket: WebsocketCommunicator) -> bool:
    message = await socket.receive_output(timeout=WITHIN_S)
    return message == {"type": "websocket.close", "code": 4401}


async def stays_open(socket: WebsocketCommunicator) -> bool:
    return await socket.receive_nothing(timeout=0.5)


async def both_sessions(user):
    return await database_sync_to_async(signed_in)(user), await database_sync_to_async(signed_in)(user)


@synchronously
async def test_logging_out_closes_that_sessions_sockets_and_no_other(user):
    here, elsewhere = await both_sessions(user)
    async with socket_of(here) as mine, socket_of(elsewhere) as theirs:
        response = await database_sync_to_async(here.post)(reverse("accounts:logout"))

        assert response.status_code == 302
        assert await closed_signed_out(mine)
        assert await stays_open(theirs)


@synchronously
async def test_changing_the_password_closes_the_other_sessions_sockets_and_keeps_this_one(user):
    here, elsewhere = await both_sessions(user)
    async with socket_of(here) as mine, socket_of(elsewhere) as theirs:
        form = {"old_password": DEFAULT_PASSWORD, "new_password1": "a new long passphrase", "new_password2": ""}
        form["new_password2"] = form["new_password1"]
        response = await database_sync_to_async(here.post)(reverse("accounts:settings_password"), form)

        assert response.status_code == 302
        assert await closed_signed_out(theirs)
        assert await stays_open(mine)
    # This session is still signed in; the other is sent to the login.
    settings_page = reverse("accounts:settings_profile")
    assert (await database_sync_to_async(here.get)(settings_page)).status_code == 200
    assert (await database_sync_to_async(elsewhere.get)(settings_page)).status_code == 302


@synchronously
async def test_deactivating_the_user_closes_every_socket(user):
    here, elsewhere = await both_sessions(user)
    async with socket_of(here) as first, socket_of(elsewhere) as second:
        user.is_active = False
        await database_sync_to_async(user.save)()  # as the admin's change form does

        assert await closed_signed_out(first)
        assert await closed_signed_out(second)


@synchronously
async def test_deleting_the_account_closes_every_socket(user):
    here, elsewhere = await both_sessions(user)
    async with socket_of(here) as first, socket_of(elsewhere) as second:
        await database_sync_to_async(services.user_delete)(user=user)

        assert await closed_signed_out(first)
        assert await closed_signed_out(second)


@synchronously
async def test_saving_anything_else_leaves_the_sockets_open(user):
    here, _elsewhere = await both_sessions(user)
    async with socket_of(here) as mine:
        user.display_name = "Someone else"
        await database_sync_to_async(user.save)(update_fields=["display_name"])
        await database_sync_to_async(user.save)()  # every field: checked, and still signed in

        assert await stays_open(mine)
