"""Open chat sockets end with their session (conversations.sessions): logging out closes that session's
sockets, changing the password closes the other sessions' (not the one it was changed from), deactivating or
deleting the user closes them all at once, with 4401 (the page then goes to the login)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client
from django.urls import reverse

from accounts import services
from tests.conversations.test_consumers import chat_socket, run
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

# The close is immediate (a channel-layer message, then one session lookup); the bound leaves room for a
# loaded machine, as timed assertions must.
WITHIN_S = 5.0


@pytest.fixture(autouse=True)
def _setup(settings, monkeypatch) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)


@pytest.fixture
def user():
    return UserFactory()


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def socket_of(client: Client):
    return chat_socket(cookie=client.cookies["sessionid"].value)


async def closed_signed_out(socket: WebsocketCommunicator) -> bool:
    message = await socket.receive_output(timeout=WITHIN_S)
    return message == {"type": "websocket.close", "code": 4401}


async def stays_open(socket: WebsocketCommunicator) -> bool:
    return await socket.receive_nothing(timeout=0.5)


def test_logging_out_closes_that_sessions_sockets_and_no_other(user):
    here, elsewhere = signed_in(user), signed_in(user)

    async def scenario():
        async with socket_of(here) as mine, socket_of(elsewhere) as theirs:
            response = await database_sync_to_async(here.post)(reverse("accounts:logout"))

            assert response.status_code == 302
            assert await closed_signed_out(mine)
            assert await stays_open(theirs)

    run(scenario)


def test_changing_the_password_closes_the_other_sessions_sockets_and_keeps_this_one(user):
    here, elsewhere = signed_in(user), signed_in(user)
    new = "a new long passphrase"
    form = {"old_password": DEFAULT_PASSWORD, "new_password1": new, "new_password2": new}

    async def scenario():
        async with socket_of(here) as mine, socket_of(elsewhere) as theirs:
            response = await database_sync_to_async(here.post)(reverse("accounts:settings_password"), form)

            assert response.status_code == 302
            assert await closed_signed_out(theirs)
            assert await stays_open(mine)

    run(scenario)
    # This session is still signed in; the other is sent to the login.
    settings_page = reverse("accounts:settings_profile")
    assert here.get(settings_page).status_code == 200
    assert elsewhere.get(settings_page).status_code == 302


def deactivate(user) -> None:
    user.is_active = False
    user.save()  # as the admin's change form does


def delete(user) -> None:
    services.user_delete(user=user)


@pytest.mark.parametrize("end", [deactivate, delete])
def test_deactivating_or_deleting_the_user_closes_every_socket(user, end):
    here, elsewhere = signed_in(user), signed_in(user)

    async def scenario():
        async with socket_of(here) as first, socket_of(elsewhere) as second:
            await database_sync_to_async(end)(user)

            assert await closed_signed_out(first)
            assert await closed_signed_out(second)

    run(scenario)


def test_saving_anything_else_leaves_the_sockets_open(user):
    here = signed_in(user)

    async def scenario():
        async with socket_of(here) as mine:
            user.display_name = "Someone else"
            await database_sync_to_async(user.save)(update_fields=["display_name"])
            await database_sync_to_async(user.save)()  # every field: checked, and still signed in

            assert await stays_open(mine)

    run(scenario)
