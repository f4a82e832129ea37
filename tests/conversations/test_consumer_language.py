"""The chat WebSocket speaks the user's language: the one chosen in Settings, else the handshake's
Accept-Language, else English. Channels runs consumers outside Django's middleware, so the consumer activates it
itself, for every frame, including the work it does in database threads and the replies it follows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client

from config.asgi import application
from conversations import consumers, generations, services
from inference import streams
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5  # seconds to wait for one frame


@pytest.fixture(autouse=True)
def _setup(llm_model, settings, monkeypatch) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    monkeypatch.setattr(services, "reply_enqueue", lambda message_id: True)  # no worker here


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@asynccontextmanager
async def chat_socket(user, *, accept_language: str = "") -> AsyncIterator[WebsocketCommunicator]:
    cookie = await database_sync_to_async(session_cookie)(user)
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", f"sessionid={cookie}".encode())]
    if accept_language:
        headers.append((b"accept-language", accept_language.encode()))
    socket = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert connected
    try:
        yield socket
    finally:
        await socket.disconnect()


async def error_for(socket: WebsocketCommunicator, frame: dict) -> str:
    await socket.send_json_to(frame)
    answer = await socket.receive_json_from(timeout=TIMEOUT)
    assert answer["type"] == "error", answer
    return answer["message"]


def empty_message() -> dict:
    """Refused in the consumer itself, on the event loop."""
    return {"type": "message.send", "client_id": "c1", "content": "   "}


def unknown_conversation() -> dict:
    """Refused by the selector, in a database thread (database_sync_to_async)."""
    return {"type": "conversation.open", "conversation": str(uuid.uuid4())}


def run(scenario):
    return async_to_sync(scenario)()


def test_a_german_user_gets_errors_in_german_from_the_consumer_and_from_its_database_threads():
    user = UserFactory(language="de")

    async def scenario():
        async with chat_socket(user, accept_language="en-US,en;q=0.9") as socket:
            return await error_for(socket, empty_message()), await error_for(socket, unknown_conversation())

    said_here, said_in_a_thread = run(scenario)

    assert said_here == "Schreiben Sie zuerst eine Nachricht."
    assert said_in_a_thread == "Unterhaltung nicht gefunden."


def test_an_english_user_gets_errors_in_english_whatever_the_browser_asks():
    user = UserFactory(language="en")

    async def scenario():
        async with chat_socket(user, accept_language="de-DE,de;q=0.9") as socket:
            return await error_for(socket, empty_message()), await error_for(socket, unknown_conversation())

    said_here, said_in_a_thread = run(scenario)

    assert said_here == "Write a message first."
    assert said_in_a_thread == "Conversation not found."


@pytest.mark.parametrize(
    "accept_language, expected",
    [
        ("de-DE,de;q=0.9,en;q=0.5", "Unterhaltung nicht gefunden."),
        ("fr-FR,de;q=0.8", "Unterhaltung nicht gefunden."),  # the first language Djinn has
        ("fr-FR,fr;q=0.9", "Conversation not found."),
        ("", "Conversation not found."),
    ],
)
def test_a_user_without_a_choice_gets_the_language_of_the_handshakes_accept_language(accept_language, expected):
    user = UserFactory(language="")

    async def scenario():
        async with chat_socket(user, accept_language=accept_language) as socket:
            return await error_for(socket, unknown_conversation())

    assert run(scenario) == expected


def test_two_connections_at_once_each_keep_their_own_language():
    german = UserFactory(language="de")
    english = UserFactory(language="en")

    async def scenario():
        async with chat_socket(german) as german_socket, chat_socket(english) as english_socket:
            await german_socket.send_json_to(unknown_conversation())
            await english_socket.send_json_to(unknown_conversation())
            german_said = await german_socket.receive_json_from(timeout=TIMEOUT)
            english_said = await english_socket.receive_json_from(timeout=TIMEOUT)
        return german_said["message"], english_said["message"]

    assert run(scenario) == ("Unterhaltung nicht gefunden.", "Conversation not found.")


def test_a_failed_reply_is_said_in_german_to_a_german_user_following_it():
    user = UserFactory(language="de")

    async def scenario():
        async with chat_socket(user) as socket:
            await socket.send_json_to({"type": "message.send", "client_id": "c1", "content": "Hallo"})
            turn = await socket.receive_json_from(timeout=TIMEOUT)
            reply_id = turn["assistant_message"]["id"]
            # The worker writes its reason in English, to the stream every reader shares.
            streams.StreamWriter(reply_id).error(message=generations.ENGINE_FAILED)
            frame = await socket.receive_json_from(timeout=TIMEOUT)
            while frame["type"] != "generation.error":
                frame = await socket.receive_json_from(timeout=TIMEOUT)
        return frame["message"]

    assert run(scenario) == (
        "Das Modell ist beim Schreiben dieser Antwort gescheitert. "
        "Lassen Sie sie neu erstellen, um es erneut zu versuchen."
    )


def test_the_connection_language_prefers_the_users_choice_then_accept_language_then_english():
    chose = UserFactory(language="de")
    left_blank = UserFactory(language="")

    def scope(user, header: bytes) -> dict:
        return {"user": user, "headers": [(b"accept-language", header)]}

    assert consumers.connection_language(scope(chose, b"en")) == "de"
    assert consumers.connection_language(scope(left_blank, b"de-AT")) == "de"
    assert consumers.connection_language(scope(left_blank, b"*")) == "en"
    assert consumers.connection_language({"headers": []}) == "en"
