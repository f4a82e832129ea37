"""The chat WebSocket (/ws/chat/) through the real ASGI stack: session auth, origin check, real Redis
streams and channel layer, PostgreSQL.

The reply worker is not part of these tests: each test writes the generation's stream itself with
StreamWriter, as the worker would, so it controls exactly which events exist when. The task the services
enqueue is recorded instead of sent to a broker nobody here consumes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client

from config.asgi import application
from conversations import consumers, services
from conversations.models import Conversation, Message
from inference import streams
from inference.redis import get_redis
from tests.conversations.factories import ConversationFactory
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5  # seconds to wait for one frame


@pytest.fixture(autouse=True)
def _setup(llm_model, settings, monkeypatch) -> None:
    # llm_model: the default registry entry, its tokenizer (which counts prompt tokens) the tiny model's.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The consumer queries from pool threads; without persistent connections each closes its own after
    # use, so none is left open on the test database when it is dropped.
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)


@pytest.fixture(autouse=True)
def queued(monkeypatch) -> list[str]:
    """Ids of the replies the services asked a worker for."""
    ids: list[str] = []

    def record(message_id) -> bool:
        ids.append(str(message_id))
        return True

    monkeypatch.setattr(services, "reply_enqueue", record)
    return ids


@pytest.fixture
def user():
    return UserFactory()


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@asynccontextmanager
async def chat_socket(
    user=None, *, origin: str = "http://localhost", cookie: str | None = None
) -> AsyncIterator[WebsocketCommunicator]:
    """A tab of ``user`` on a session of its own, or of the session whose ``cookie`` is given."""
    headers = [(b"origin", origin.encode()), (b"host", b"localhost")]
    if user is not None and cookie is None:
        cookie = await database_sync_to_async(session_cookie)(user)
    if cookie is not None:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    socket = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert connected
    try:
        yield socket
    finally:
        await socket.disconnect()


async def receive(socket: WebsocketCommunicator) -> dict:
    return await socket.receive_json_from(timeout=TIMEOUT)


async def receive_until(socket: WebsocketCommunicator, type_: str) -> list[dict]:
    """Frames up to and including the first of ``type_``."""
    frames = [await receive(socket)]
    while frames[-1]["type"] != type_:
        frames.append(await receive(socket))
    return frames


async def send_message(socket: WebsocketCommunicator, content: str = "Hello there", **fields) -> dict:
    """Send a message; returns turn.created after checking that the branch follows it."""
    await socket.send_json_to({"type": "message.send", "client_id": "c1", "content": content, **fields})
    turn = await receive(socket)
    assert turn["type"] == "turn.created", turn
    branch = await receive(socket)
    assert branch["type"] == "conversation.branch", branch
    return turn


def finish_reply(generation_id: str, text: str, *, status: str = "completed", finish_reason: str = "stop") -> None:
    """Save the reply as the worker does before it writes its done event."""
    Message.objects.filter(pk=generation_id).update(
        content=text, status=status, finish_reason=finish_reason, completion_tokens=3
    )


async def complete(socket: WebsocketCommunicator, generation_id: str, text: str) -> None:
    """Finish a reply as the worker would (saved, then its done event) and read it to the end."""
    await database_sync_to_async(finish_reply)(generation_id, text)
    streams.StreamWriter(generation_id).done(finish_reason="stop", usage=None)
    done = await receive_until(socket, "generation.done")
    assert done[-1]["id"] == generation_id


def run(scenario):
    return async_to_sync(scenario)()


# Connecting ---------------------------------------------------------------------------------------


def test_an_unauthenticated_socket_is_closed_with_4401():
    async def scenario():
        socket = WebsocketCommunicator(application, "/ws/chat/", headers=[(b"origin", b"http://localhost")])
        await socket.connect(timeout=TIMEOUT)

        closed = await socket.receive_output(timeout=TIMEOUT)

        assert closed == {"type": "websocket.close", "code": 4401}

    run(scenario)


def test_a_cross_origin_socket_is_refused(user):
    async def scenario():
        cookie = await database_sync_to_async(session_cookie)(user)
        socket = WebsocketCommunicator(
            application,
            "/ws/chat/",
            headers=[(b"origin", b"https://evil.example"), (b"cookie", f"sessionid={cookie}".encode())],
        )

        connected, _ = await socket.connect(timeout=TIMEOUT)

        assert not connected

    run(scenario)


# Sending and streaming ----------------------------------------------------------------------------


def test_sending_a_message_answers_with_the_turn_then_the_branch(user, queued):
    async def scenario():
        async with chat_socket(user) as socket:
            await socket.send_json_to({"type": "message.send", "client_id": "abc", "content": "Hello there"})

            turn = await receive(socket)
            branch = await receive(socket)

        assert turn["type"] == "turn.created"
        assert turn["client_id"] == "abc"
        assert turn["conversation"]["title"] == "Hello there"
        assert turn["user_message"]["content"] == "Hello there"
        assert turn["assistant_message"]["status"] == "queued"
        assert queued == [turn["assistant_message"]["id"]]
        assert branch["conversation"]["id"] == turn["conversation"]["id"]
        assert [m["id"] for m in branch["messages"]] == [turn["user_message"]["id"], turn["assistant_message"]["id"]]

    run(scenario)


def test_reply_events_arrive_in_order_and_done_carries_the_saved_message(user):
    async def scenario():
        async with chat_socket(user) as socket:
            turn = await send_message(socket)
            generation_id = turn["assistant_message"]["id"]
            writer = streams.StreamWriter(generation_id)

            writer.delta("Hel")
            writer.delta("lo!")
            await database_sync_to_async(finish_reply)(generation_id, "Hello!")
            writer.done(finish_reason="stop", usage={"prompt_tokens": 9, "completion_tokens": 3})
            frames = await receive_until(socket, "generation.done")

        assert [(f["type"], f["seq"], f.get("text")) for f in frames] == [
            ("generation.delta", 1, "Hel"),
            ("generation.delta", 2, "lo!"),
            ("generation.done", 3, None),
        ]
        assert all(f["id"] == generation_id for f in frames)
        assert frames[-1]["finish_reason"] == "stop"
        assert frames[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 3}
        assert frames[-1]["message"]["content"] == "Hello!"
        assert frames[-1]["message"]["status"] == "completed"

    run(scenario)


def test_a_failed_reply_ends_with_an_error_event(user):
    async def scenario():
        async with chat_socket(user) as socket:
            turn = await send_message(socket)
            generation_id = turn["assistant_message"]["id"]

            streams.StreamWriter(generation_id).error(message="The model stopped working.")
            frame = await receive(socket)

        assert frame == {
            "type": "generation.error",
            "id": generation_id,
            "seq": 1,
            "message": "The model stopped working.",
            "code": "generation_failed",
        }

    run(scenario)


def test_a_reconnecting_client_gets_exactly_the_missing_events(user):
    async def scenario():
        async with chat_socket(user) as first:
            turn = await send_message(first)
            generation_id = turn["assistant_message"]["id"]
            writer = streams.StreamWriter(generation_id)
            for word in ("one ", "two ", "three "):
                writer.delta(word)
            seen = [await receive(first) for _ in range(2)]  # the tab goes away after seq 2
        writer.delta("four ")
        writer.delta("five")
        await database_sync_to_async(finish_reply)(generation_id, "one two three four five")
        writer.done(finish_reason="stop", usage=None)

        async with chat_socket(user) as second:
            await second.send_json_to({"type": "generation.watch", "id": generation_id, "after": seen[-1]["seq"]})
            resumed = await receive_until(second, "generation.done")
            assert await second.receive_nothing(timeout=0.3)

        assert [f["seq"] for f in seen] == [1, 2]
        assert [f["seq"] for f in resumed] == [3, 4, 5, 6]
        text = "".join(f["text"] for f in seen + resumed if f["type"] == "generation.delta")
        assert text == "one two three four five"

    run(scenario)


def test_watching_a_finished_reply_whose_stream_expired_ends_it_from_the_database(user):
    async def scenario():
        async with chat_socket(user) as socket:
            turn = await send_message(socket)
        generation_id = turn["assistant_message"]["id"]
        await database_sync_to_async(finish_reply)(generation_id, "Saved text")
        get_redis().delete(streams.stream_key(generation_id))  # as if an hour had passed

        async with chat_socket(user) as socket:
            await socket.send_json_to({"type": "generation.watch", "id": generation_id, "after": 0})
            frame = await receive(socket)

        assert frame["type"] == "generation.done"
        assert frame["message"]["content"] == "Saved text"

    run(scenario)


def test_cancel_sets_the_flag_for_a_running_reply(user):
    async def scenario():
        async with chat_socket(user) as socket:
            turn = await send_message(socket)
            generation_id = turn["assistant_message"]["id"]
            await database_sync_to_async(Message.objects.filter(pk=generation_id).update)(status="running")

            await socket.send_json_to({"type": "generation.cancel", "id": generation_id})
            assert await socket.receive_nothing(timeout=0.3)

        assert streams.cancel_requested(generation_id)

    run(scenario)


def test_cancelling_a_reply_no_worker_took_ends_it_at_once(user):
    async def scenario():
        async with chat_socket(user) as socket:
            turn = await send_message(socket)
            generation_id = turn["assistant_message"]["id"]

            await socket.send_json_to({"type": "generation.cancel", "id": generation_id})
            frame = await receive(socket)

        assert frame["type"] == "generation.done"
        assert frame["finish_reason"] == "cancelled"
        assert frame["message"]["status"] == "cancelled"

    run(scenario)


# Someone else's ids --------------------------------------------------------------------------------


def test_watching_someone_elses_generation_is_not_found(user):
    async def scenario():
        async with chat_socket(user) as owner:
            turn = await send_message(owner)
            generation_id = turn["assistant_message"]["id"]
            streams.StreamWriter(generation_id).delta("private words")
            await receive(owner)
        intruder = await database_sync_to_async(UserFactory)()

        async with chat_socket(intruder) as socket:
            await socket.send_json_to({"type": "generation.watch", "id": generation_id, "after": 0})
            theirs = await receive(socket)
            await socket.send_json_to({"type": "generation.watch", "id": str(uuid.uuid4()), "after": 0})
            unknown = await receive(socket)
            assert await socket.receive_nothing(timeout=0.3)

        assert theirs == {"type": "error", "code": "not_found", "message": "Generation not found."}
        assert unknown == theirs

    run(scenario)


def test_someone_elses_conversation_and_messages_are_not_found(user):
    async def scenario():
        async with chat_socket(user) as owner:
            turn = await send_message(owner)
        intruder = await database_sync_to_async(UserFactory)()
        conversation_id = turn["conversation"]["id"]
        attempts = [
            {"type": "message.send", "conversation": conversation_id, "content": "hi", "client_id": "x"},
            {"type": "message.regenerate", "message": turn["assistant_message"]["id"], "client_id": "x"},
            {"type": "message.edit", "message": turn["user_message"]["id"], "content": "hi", "client_id": "x"},
            {"type": "generation.cancel", "id": turn["assistant_message"]["id"]},
            {"type": "conversation.rename", "conversation": conversation_id, "title": "Mine now"},
            {"type": "conversation.pin", "conversation": conversation_id, "pinned": True},
            {"type": "conversation.archive", "conversation": conversation_id, "archived": True},
            {"type": "conversation.set_system_prompt", "conversation": conversation_id, "system_prompt": "Obey"},
            {"type": "conversation.delete", "conversation": conversation_id},
            {"type": "conversation.switch_branch", "message": turn["user_message"]["id"]},
            {"type": "conversation.open", "conversation": conversation_id},
        ]

        async with chat_socket(intruder) as socket:
            answers = []
            for attempt in attempts:
                await socket.send_json_to(attempt)
                answers.append(await receive(socket))

        assert {(a["type"], a["code"]) for a in answers} == {("error", "not_found")}
        conversation = await database_sync_to_async(Conversation.objects.get)(pk=conversation_id)
        assert (conversation.title, conversation.pinned, conversation.archived) == ("Hello there", False, False)
        assert await database_sync_to_async(conversation.messages.count)() == 2

    run(scenario)


# Bad input -----------------------------------------------------------------------------------------


def test_malformed_frames_get_an_error_and_the_socket_stays_usable(user):
    async def scenario():
        async with chat_socket(user) as socket:
            answers = []
            for bad in ("{not json", "[1, 2]", json.dumps({"type": "nonsense"}), json.dumps({"no": "type"})):
                await socket.send_to(text_data=bad)
                answers.append(await receive(socket))
            await socket.send_to(bytes_data=b"\x00\x01")
            answers.append(await receive(socket))
            await socket.send_json_to({"type": "generation.watch", "id": "not-an-id", "after": 0})
            answers.append(await receive(socket))
            await socket.send_json_to({"type": "generation.watch", "id": str(uuid.uuid4()), "after": -1})
            answers.append(await receive(socket))

            await socket.send_json_to({"type": "conversation.search", "query": ""})
            still_working = await receive(socket)

        assert [(a["type"], a["code"]) for a in answers] == [("error", "invalid_input")] * 7
        assert all(a["message"] for a in answers)
        assert still_working == {
            "type": "conversation.list",
            "query": "",
            "archived": False,
            "after": None,
            "next": None,
            "conversations": [],
        }

    run(scenario)


def test_an_empty_message_is_refused_with_its_client_id(user, queued):
    async def scenario():
        async with chat_socket(user) as socket:
            await socket.send_json_to({"type": "message.send", "client_id": "c9", "content": "   "})
            answer = await receive(socket)

        assert answer == {
            "type": "error",
            "code": "invalid_input",
            "message": "Write a message first.",
            "client_id": "c9",
        }
        assert queued == []

    run(scenario)


def test_a_message_over_the_models_context_is_refused_before_any_work(user, queued):
    async def scenario():
        async with chat_socket(user) as socket:
            await socket.send_json_to({"type": "message.send", "client_id": "big", "content": "Paris " * 2000})
            answer = await receive(socket)

        assert answer["code"] == "context_length_exceeded"
        assert answer["client_id"] == "big"
        assert "too long" in answer["message"]
        assert queued == []
        assert not await database_sync_to_async(Conversation.objects.exists)()

    run(scenario)


@pytest.mark.plan_limits
def test_a_third_reply_at_once_on_free_is_refused_with_when_to_try_again_and_nothing_is_kept(user, queued):
    async def scenario():
        async with chat_socket(user) as socket:
            await send_message(socket, "One")
            await send_message(socket, "Two")  # Free writes 2 replies at once; neither has finished
            await socket.send_json_to({"type": "message.send", "client_id": "c3", "content": "Three"})
            answer = await receive(socket)

        assert (answer["type"], answer["code"], answer["limit"], answer["client_id"]) == (
            "error",
            "rate_limit_exceeded",
            "concurrent",
            "c3",
        )
        assert answer["retry_after_s"] >= 1
        assert "The Free plan writes 2 replies at once" in answer["message"]
        assert len(queued) == 2
        assert await database_sync_to_async(Conversation.objects.count)() == 2

    run(scenario)


# Branches and the sidebar --------------------------------------------------------------------------


def test_regenerate_edit_and_switching_branches(user, queued):
    async def scenario():
        async with chat_socket(user) as socket:
            turn = await send_message(socket, "Tea or coffee?")
            await complete(socket, turn["assistant_message"]["id"], "Tea.")

            await socket.send_json_to(
                {"type": "message.regenerate", "message": turn["assistant_message"]["id"], "client_id": "r"}
            )
            regenerated = await receive(socket)
            after_regenerate = await receive(socket)
            await complete(socket, regenerated["assistant_message"]["id"], "Coffee.")

            await socket.send_json_to(
                {"type": "message.edit", "message": turn["user_message"]["id"], "content": "Milk?", "client_id": "e"}
            )
            edited = await receive(socket)
            after_edit = await receive(socket)
            await complete(socket, edited["assistant_message"]["id"], "Milk.")

            await socket.send_json_to({"type": "conversation.switch_branch", "message": turn["user_message"]["id"]})
            switched = await receive(socket)

        assert (regenerated["type"], regenerated["client_id"]) == ("turn.created", "r")
        assert [(m["sibling_index"], m["sibling_count"]) for m in after_regenerate["messages"]] == [(0, 1), (1, 2)]
        assert (edited["type"], edited["client_id"]) == ("turn.created", "e")
        assert [m["content"] for m in after_edit["messages"]] == ["Milk?", ""]
        assert after_edit["messages"][0]["sibling_count"] == 2
        assert switched["type"] == "conversation.branch"
        assert [m["content"] for m in switched["messages"]] == ["Tea or coffee?", "Coffee."]
        assert len(queued) == 3

    run(scenario)


def test_sidebar_operations_reach_every_tab_of_the_user(user):
    async def scenario():
        async with chat_socket(user) as tab, chat_socket(user) as other_tab:
            turn = await send_message(tab, "Plans for the weekend")
            conversation_id = turn["conversation"]["id"]
            appeared = await receive(other_tab)

            await tab.send_json_to({"type": "conversation.rename", "conversation": conversation_id, "title": "Trip"})
            renamed = [await receive(tab), await receive(other_tab)]
            await tab.send_json_to({"type": "conversation.pin", "conversation": conversation_id, "pinned": True})
            pinned = await receive(other_tab)
            await tab.send_json_to({"type": "conversation.search", "query": "weekend"})
            found = await receive_until(tab, "conversation.list")
            await tab.send_json_to({"type": "conversation.archive", "conversation": conversation_id, "archived": True})
            archived = await receive(other_tab)
            await tab.send_json_to({"type": "conversation.delete", "conversation": conversation_id})
            deleted = await receive(other_tab)

        assert appeared == {"type": "conversation.updated", "conversation": turn["conversation"], "new_turn": True}
        assert {frame["conversation"]["title"] for frame in renamed} == {"Trip"}
        assert pinned["conversation"]["pinned"] is True
        assert [c["id"] for c in found[-1]["conversations"]] == [conversation_id]
        assert archived["conversation"]["archived"] is True
        assert deleted == {"type": "conversation.deleted", "conversation": conversation_id}
        assert not await database_sync_to_async(Conversation.objects.filter(pk=conversation_id).exists)()

    run(scenario)


def test_a_generated_title_reaches_the_owners_sockets_only(user):
    async def scenario():
        stranger = await database_sync_to_async(UserFactory)()
        async with chat_socket(user) as mine, chat_socket(stranger) as theirs:
            conversation = {"id": str(uuid.uuid4()), "title": "Weekend trip"}

            await get_channel_layer().group_send(
                f"user.{user.pk}", {"type": "conversation.updated", "conversation": conversation}
            )
            received = await receive(mine)
            assert await theirs.receive_nothing(timeout=0.3)

        assert received == {"type": "conversation.updated", "conversation": conversation}

    run(scenario)


def test_a_slow_watcher_does_not_hold_up_other_commands(user):
    async def scenario():
        async with chat_socket(user) as socket:
            turn = await send_message(socket)
            # The reply's watcher is now blocked on Redis; commands are still answered at once.
            await socket.send_json_to({"type": "conversation.search", "query": ""})
            frames = await asyncio.wait_for(receive_until(socket, "conversation.list"), timeout=2)

        assert frames[-1]["conversations"][0]["id"] == turn["conversation"]["id"]

    run(scenario)


def test_a_flood_of_frames_is_refused_past_a_burst_and_a_client_that_keeps_at_it_is_disconnected(user, monkeypatch):
    # No refill during the test: on a busy machine the 45 frames take long enough to earn one more.
    monkeypatch.setattr(consumers, "FLOOD_RATE", 0.0)

    async def scenario():
        async with chat_socket(user) as socket:
            for _ in range(consumers.FLOOD_BURST + 5):
                await socket.send_json_to({"type": "conversation.search", "query": ""})
            frames = [await receive(socket) for _ in range(consumers.FLOOD_BURST + 1)]

            for _ in range(consumers.FLOOD_CLOSE_AFTER + 10):
                await socket.send_json_to({"type": "conversation.search", "query": ""})
            output = await socket.receive_output(timeout=TIMEOUT)
            while output["type"] != "websocket.close":
                output = await socket.receive_output(timeout=TIMEOUT)

        refused = [frame for frame in frames if frame["type"] == "error"]
        assert [frame["type"] for frame in frames].count("conversation.list") == consumers.FLOOD_BURST
        assert refused[0]["code"] == "rate_limited"
        assert output["code"] == consumers.CLOSE_FLOOD

    run(scenario)


def test_a_tab_that_missed_a_turn_is_told_and_shown_it_instead_of_forking_the_conversation(user):
    async def scenario():
        async with chat_socket(user) as tab_a, chat_socket(user) as tab_b:
            first = await send_message(tab_a, "First question")
            conversation_id = first["conversation"]["id"]
            await complete(tab_a, first["assistant_message"]["id"], "First answer")
            await receive_until(tab_b, "conversation.updated")
            # tab A asks again; tab B, which still shows the first answer as the end, sends after it
            second = await send_message(
                tab_a, "Second question", conversation=conversation_id, parent=first["assistant_message"]["id"]
            )
            told = await receive_until(tab_b, "conversation.updated")
            await tab_b.send_json_to(
                {
                    "type": "message.send",
                    "client_id": "b1",
                    "content": "From tab B",
                    "conversation": conversation_id,
                    "parent": first["assistant_message"]["id"],
                }
            )
            refused = await receive_until(tab_b, "error")
            shown = await receive_until(tab_b, "conversation.branch")

        assert told[-1]["new_turn"] is True
        assert refused[-1]["code"] == "conversation_changed"
        assert refused[-1]["client_id"] == "b1"
        assert [m["id"] for m in shown[-1]["messages"]][-1] == second["assistant_message"]["id"]
        contents = await database_sync_to_async(
            lambda: list(Message.objects.filter(conversation_id=conversation_id).values_list("content", flat=True))
        )()
        assert "From tab B" not in contents  # nothing forked

    run(scenario)


def test_the_sidebar_pages_through_a_long_history_by_cursor(user):
    async def scenario():
        await database_sync_to_async(ConversationFactory.create_batch)(consumers.PAGE_SIZE + 5, owner=user)
        async with chat_socket(user) as socket:
            await socket.send_json_to({"type": "conversation.search", "query": ""})
            first = (await receive_until(socket, "conversation.list"))[-1]
            await socket.send_json_to({"type": "conversation.search", "query": "", "after": first["next"]})
            second = (await receive_until(socket, "conversation.list"))[-1]
            await socket.send_json_to({"type": "conversation.search", "query": "", "after": "bogus"})
            bad = (await receive_until(socket, "error"))[-1]

        ids = [c["id"] for c in first["conversations"] + second["conversations"]]
        assert len(first["conversations"]) == consumers.PAGE_SIZE
        assert second["after"] == first["next"] and second["next"] is None
        assert len(ids) == len(set(ids)) == consumers.PAGE_SIZE + 5
        assert bad["code"] == "invalid_input"

    run(scenario)


def test_a_command_sent_again_after_a_dropped_connection_makes_its_turn_once(user):
    async def scenario():
        frame = {"type": "message.send", "client_id": str(uuid.uuid4()), "content": "Sent while the network dropped"}
        async with chat_socket(user) as lost:
            await lost.send_json_to(frame)
            first = await receive_until(lost, "turn.created")
        async with chat_socket(user) as again:  # the page, reconnected, sends the same command as it was
            await again.send_json_to(frame)
            second = await receive_until(again, "turn.created")
            branch = await receive(again)
            await again.send_json_to({"type": "ping"})
            pong = await receive_until(again, "pong")

        assert second[-1]["assistant_message"]["id"] == first[-1]["assistant_message"]["id"]
        assert second[-1]["client_id"] == frame["client_id"]
        assert branch["type"] == "conversation.branch"
        assert pong[-1] == {"type": "pong"}
        count = await database_sync_to_async(Message.objects.filter(content="Sent while the network dropped").count)()
        assert count == 1

    run(scenario)


def test_a_command_that_failed_can_be_sent_again_and_the_same_id_on_another_command_is_another_turn(user):
    async def scenario():
        client_id = str(uuid.uuid4())
        async with chat_socket(user) as socket:
            await socket.send_json_to({"type": "message.send", "client_id": client_id, "content": "x", "model": "nope"})
            refused = await receive_until(socket, "error")
            await socket.send_json_to({"type": "message.send", "client_id": client_id, "content": "x"})
            made = await receive_until(socket, "turn.created")
            await receive(socket)  # its branch
            await socket.send_json_to({"type": "message.send", "client_id": client_id, "content": "y"})
            other = await receive_until(socket, "turn.created")

        assert refused[-1]["code"] == "model_not_found"
        assert other[-1]["assistant_message"]["id"] != made[-1]["assistant_message"]["id"]

    run(scenario)


def test_a_reply_is_rated_in_every_tab_and_only_a_finished_reply_of_ones_own(user):
    async def scenario():
        stranger = await database_sync_to_async(UserFactory)()
        async with chat_socket(user) as tab, chat_socket(user) as other_tab, chat_socket(stranger) as theirs:
            turn = await send_message(tab, "Rate me")
            reply_id = turn["assistant_message"]["id"]
            await receive_until(other_tab, "conversation.updated")
            await tab.send_json_to({"type": "message.feedback", "message": reply_id, "rating": 1})
            running = await receive_until(tab, "error")
            await complete(tab, reply_id, "An answer")
            await tab.send_json_to({"type": "message.feedback", "message": reply_id, "rating": 1})
            rated = [await receive_until(tab, "message.updated"), await receive_until(other_tab, "message.updated")]
            await tab.send_json_to({"type": "message.feedback", "message": reply_id, "rating": 5})
            bad = await receive_until(tab, "error")
            await tab.send_json_to({"type": "message.feedback", "message": turn["user_message"]["id"], "rating": -1})
            question = await receive_until(tab, "error")
            await theirs.send_json_to({"type": "message.feedback", "message": reply_id, "rating": -1})
            foreign = await receive_until(theirs, "error")

        assert running[-1]["code"] == "invalid_input"
        assert [frames[-1]["message"]["feedback"] for frames in rated] == [1, 1]
        assert bad[-1]["code"] == "invalid_input" and question[-1]["code"] == "invalid_input"
        assert foreign[-1]["code"] == "not_found"
        feedback = await database_sync_to_async(lambda: Message.objects.get(pk=reply_id).feedback)()
        assert feedback == 1

    run(scenario)


def test_a_chat_is_started_in_a_project_and_moved_out_of_it_in_every_tab(user):
    from conversations import projects

    project = projects.project_create(user=user, name="Thesis")
    stranger_project = projects.project_create(user=UserFactory(), name="Other")

    async def scenario():
        async with chat_socket(user) as tab, chat_socket(user) as other_tab:
            turn = await send_message(tab, "Outline chapter one", project=str(project.pk))
            await receive(other_tab)  # the new chat
            conversation_id = turn["conversation"]["id"]
            frame = {"type": "conversation.set_project", "conversation": conversation_id, "project": None}
            await tab.send_json_to(frame)
            moved_out = await receive(other_tab)
            await tab.send_json_to({**frame, "project": str(stranger_project.pk), "client_id": "x"})
            refused = await receive_until(tab, "error")
        return turn, moved_out, refused

    turn, moved_out, refused = run(scenario)
    assert turn["conversation"]["project"] == str(project.pk)
    assert moved_out["conversation"]["project"] is None
    assert refused[-1]["code"] == "not_found"
    assert Conversation.objects.get(pk=turn["conversation"]["id"]).project_id is None
