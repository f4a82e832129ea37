"""/api/v1/generations/{id}/events: the reply's stream as Server-Sent Events, resumable with ``after`` or
Last-Event-ID (exactly the missing events), ending on the terminal event, and a live reply end to end."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from conversations.models import Message
from inference import streams
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.factories import UserFactory

# The sync test client drains the view's async event stream through async_to_sync, and Django says so.
pytestmark = pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")


def sse_events(response: Any) -> list[dict[str, Any]]:
    """The events of an SSE body, each as {"id", "event", "data" (parsed)}; comment lines and the ``retry``
    field (no data: not an event) are skipped."""
    events = []
    for block in b"".join(response).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "data" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return events


@pytest.fixture
def running_reply(api_user) -> Message:
    _question, reply = add_exchange(ConversationFactory(owner=api_user), status=Message.Status.RUNNING)
    return reply


@pytest.fixture
def written(running_reply) -> list[int]:
    """Three deltas and the done event in the reply's stream; their seqs."""
    writer = streams.StreamWriter(running_reply.pk)
    seqs = [writer.delta("Hel"), writer.delta("lo"), writer.delta("!")]
    seqs.append(
        writer.done(finish_reason="stop", usage={"prompt_tokens": 5, "completion_tokens": 3, "cached_tokens": 0})
    )
    return seqs


def test_the_events_come_as_sse_in_order_ending_with_done(api_client, running_reply, written):
    response = api_client.get(f"/api/v1/generations/{running_reply.pk}/events", HTTP_ACCEPT="text/event-stream")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response["Cache-Control"] == "no-cache"
    events = sse_events(response)
    assert [(e["id"], e["event"]) for e in events] == [(1, "delta"), (2, "delta"), (3, "delta"), (4, "done")]
    assert "".join(e["data"]["text"] for e in events) == "Hello!"
    assert all(e["data"]["seq"] == e["id"] and e["data"]["id"] == str(running_reply.pk) for e in events)
    assert events[-1]["data"]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "cached_tokens": 0}


def test_resuming_after_a_seq_gives_exactly_the_missing_events(api_client, running_reply, written):
    response = api_client.get(f"/api/v1/generations/{running_reply.pk}/events?after=2")

    assert [e["id"] for e in sse_events(response)] == [3, 4]


def test_last_event_id_resumes_like_after_and_wins_over_it(api_client, running_reply, written):
    response = api_client.get(f"/api/v1/generations/{running_reply.pk}/events?after=0", HTTP_LAST_EVENT_ID="3")

    assert [e["id"] for e in sse_events(response)] == [4]


def test_an_error_event_ends_the_stream(api_client, running_reply):
    writer = streams.StreamWriter(running_reply.pk)
    writer.delta("Partial")
    writer.error(message="The model failed.", code="generation_failed")

    events = sse_events(api_client.get(f"/api/v1/generations/{running_reply.pk}/events"))

    assert [e["event"] for e in events] == ["delta", "error"]
    assert events[-1]["data"]["message"] == "The model failed."


# Transactional: the stream reads the finished reply on a connection of its own, which must see it.
@pytest.mark.django_db(transaction=True)
def test_a_finished_reply_whose_stream_expired_ends_at_once_with_a_done_event(api_client, api_user):
    _question, reply = add_exchange(ConversationFactory(owner=api_user))
    Message.objects.filter(pk=reply.pk).update(finish_reason="stop", prompt_tokens=4, completion_tokens=6)

    (event,) = sse_events(api_client.get(f"/api/v1/generations/{reply.pk}/events?after=9"))

    assert (event["id"], event["event"]) == (9, "done")
    assert event["data"]["finish_reason"] == "stop"
    assert event["data"]["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "cached_tokens": 0}


# Transactional: the stream reads the finished reply on a connection of its own, which must see it.
@pytest.mark.django_db(transaction=True)
def test_a_failed_reply_whose_stream_expired_ends_with_its_error(api_client, api_user):
    _question, reply = add_exchange(ConversationFactory(owner=api_user), status=Message.Status.FAILED)
    Message.objects.filter(pk=reply.pk).update(error="The worker went away.")

    (event,) = sse_events(api_client.get(f"/api/v1/generations/{reply.pk}/events"))

    assert event["event"] == "error"
    assert event["data"]["message"] == "The worker went away."
    assert event["data"]["code"] == "generation_failed"


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [("?after=-1", {}, "after"), ("?after=x", {}, "after"), ("", {"HTTP_LAST_EVENT_ID": "two"}, "after")],
)
def test_a_bad_resume_point_is_a_400(api_client, running_reply, query, headers, field):
    response = api_client.get(f"/api/v1/generations/{running_reply.pk}/events{query}", **headers)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert set(response.json()["field_errors"]) == {field}


def test_a_question_has_no_events(api_client, running_reply):
    response = api_client.get(f"/api/v1/generations/{running_reply.parent_id}/events", HTTP_ACCEPT="text/event-stream")

    assert response.status_code == 404
    assert response.json() == {"detail": "Generation not found.", "code": "not_found"}


def test_a_session_follows_its_replies_too(client, api_user, running_reply, written):
    client.force_login(api_user)

    response = client.get(f"/api/v1/generations/{running_reply.pk}/events?after=3")

    assert [e["event"] for e in sse_events(response)] == ["done"]


@pytest.mark.django_db(transaction=True)
def test_a_live_reply_streams_its_text_and_ends_with_the_saved_message(make_api_client, celery_worker, llm_model):
    client = make_api_client(UserFactory())
    turn = client.post(
        "/api/v1/conversations", {"content": "Hi", "params": {"temperature": 0, "max_tokens": 12}}, format="json"
    ).json()
    generation_id = turn["assistant_message"]["id"]

    events = sse_events(client.get(f"/api/v1/generations/{generation_id}/events"))

    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["event"] == "done"
    assert events[-1]["data"]["finish_reason"] == "length"
    assert events[-1]["data"]["usage"]["completion_tokens"] == 12
    message = client.get(f"/api/v1/conversations/{turn['conversation']['id']}").json()["messages"][-1]
    assert message["status"] == "completed"
    assert message["content"] == "".join(e["data"]["text"] for e in events[:-1])


class SseConnection:
    """A real HTTP connection to the live server, reading SSE events as they come."""

    def __init__(self, base_url: str, path: str, key: str, last_event_id: int | None = None) -> None:
        self.connection = http.client.HTTPConnection(urlsplit(base_url).netloc, timeout=60)
        headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.connection.request("GET", path, headers=headers)
        self.response = self.connection.getresponse()

    def next_event(self) -> dict[str, Any]:
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline().decode().rstrip("\n")
            if not line and "data" in fields:
                return {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    def close(self) -> None:
        self.connection.close()


@pytest.mark.django_db(transaction=True)
def test_over_a_real_connection_a_client_that_reconnects_gets_every_event_once(
    make_api_client, celery_worker, live_server_url, llm_model
):
    client = make_api_client(UserFactory())
    key = client.api_key
    turn = client.post(
        "/api/v1/conversations", {"content": "Hi", "params": {"temperature": 0, "max_tokens": 40}}, format="json"
    ).json()
    path = f"/api/v1/generations/{turn['assistant_message']['id']}/events"

    first = SseConnection(live_server_url, path, key)
    assert first.response.status == 200
    assert first.response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    before = [first.next_event(), first.next_event()]
    first.close()  # the connection drops mid-reply
    second = SseConnection(live_server_url, path, key, last_event_id=before[-1]["id"])
    after = [second.next_event()]
    while after[-1]["event"] != "done":
        after.append(second.next_event())
    second.close()

    events = before + after
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["data"]["usage"]["completion_tokens"] == 40
    message = client.get(f"/api/v1/conversations/{turn['conversation']['id']}").json()["messages"][-1]
    assert message["content"] == "".join(e["data"]["text"] for e in events[:-1])


@pytest.mark.django_db(transaction=True)
def test_over_a_real_connection_someone_elses_stream_is_a_404(make_api_client, live_server_url, api_user):
    _question, reply = add_exchange(ConversationFactory(owner=api_user), status=Message.Status.RUNNING)
    stranger = make_api_client(UserFactory())

    connection = SseConnection(live_server_url, f"/api/v1/generations/{reply.pk}/events", stranger.api_key)

    assert connection.response.status == 404
    assert json.loads(connection.response.read()) == {"detail": "Generation not found.", "code": "not_found"}
    connection.close()
