"""/api/v1 messages: send, regenerate, edit, switch branch, and cancel a reply; by API key and by session."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from conversations.models import Message
from inference import streams
from tests.conversations.factories import ConversationFactory, add_exchange


@pytest.fixture
def conversation(api_user, llm_model):
    return ConversationFactory(owner=api_user, model=llm_model.name)


@pytest.fixture
def exchange(conversation) -> tuple[Message, Message]:
    return add_exchange(conversation, question="What is Djinn?", answer="A chat service.")


def test_sending_continues_after_the_current_leaf(api_client, conversation, exchange):
    _question, reply = exchange

    response = api_client.post(
        f"/api/v1/conversations/{conversation.pk}/messages", {"content": "Tell me more"}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert body["user_message"]["parent"] == str(reply.pk)
    assert body["user_message"]["content"] == "Tell me more"
    assert body["assistant_message"]["status"] == "queued"
    conversation.refresh_from_db()
    assert str(conversation.current_leaf_id) == body["assistant_message"]["id"]


def test_sending_after_an_earlier_reply_starts_a_branch_there(api_client, conversation, exchange):
    _question, first_reply = exchange
    add_exchange(conversation, parent=first_reply, question="Second question")

    response = api_client.post(
        f"/api/v1/conversations/{conversation.pk}/messages",
        {"content": "Another second question", "parent": str(first_reply.pk), "params": {"seed": 7}},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["user_message"]["parent"] == str(first_reply.pk)
    assert Message.objects.get(pk=response.json()["assistant_message"]["id"]).params["seed"] == 7
    assert first_reply.children.count() == 2


def test_sending_while_a_reply_is_being_written_is_a_400(api_client, conversation):
    add_exchange(conversation, status=Message.Status.RUNNING)

    response = api_client.post(
        f"/api/v1/conversations/{conversation.pk}/messages", {"content": "Hello?"}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"
    assert "still being written" in response.json()["detail"]


def test_an_empty_message_is_a_400(api_client, conversation, exchange):
    response = api_client.post(f"/api/v1/conversations/{conversation.pk}/messages", {"content": "  \n "}, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": "A message cannot be empty.", "code": "invalid_input"}


def test_regenerating_adds_a_sibling_reply_and_shows_it(api_client, conversation, exchange):
    question, reply = exchange

    response = api_client.post(f"/api/v1/messages/{reply.pk}/regenerate")

    assert response.status_code == 201
    body = response.json()
    assert body["user_message"]["id"] == str(question.pk)
    assert body["assistant_message"]["parent"] == str(question.pk)
    assert body["assistant_message"]["id"] != str(reply.pk)
    assert question.children.count() == 2
    assert str(body["conversation"]["current_leaf"]) == body["assistant_message"]["id"]


def test_only_a_reply_can_be_regenerated(api_client, exchange):
    question, _reply = exchange

    response = api_client.post(f"/api/v1/messages/{question.pk}/regenerate")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"


def test_editing_a_question_makes_a_new_branch_with_a_queued_reply(api_client, conversation, exchange):
    question, _reply = exchange

    response = api_client.post(
        f"/api/v1/messages/{question.pk}/edit", {"content": "What is Djinn, really?"}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert body["user_message"]["id"] != str(question.pk)
    assert body["user_message"]["parent"] is None
    assert body["user_message"]["content"] == "What is Djinn, really?"
    assert body["assistant_message"]["status"] == "queued"
    question.refresh_from_db()
    assert question.content == "What is Djinn?"


def test_switching_branch_shows_the_other_one(api_client, conversation, exchange):
    question, first_reply = exchange
    add_exchange(conversation, question="Edited question", answer="Other answer")  # now shown

    response = api_client.post(f"/api/v1/messages/{question.pk}/switch-branch")

    assert response.status_code == 200
    body = response.json()
    assert body["current_leaf"] == str(first_reply.pk)
    assert [m["content"] for m in body["messages"]] == ["What is Djinn?", "A chat service."]
    assert api_client.get(f"/api/v1/conversations/{conversation.pk}").json() == body


def test_cancelling_a_queued_reply_ends_it_and_its_stream(api_client, conversation, django_capture_on_commit_callbacks):
    _question, reply = add_exchange(conversation, status=Message.Status.QUEUED)

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(f"/api/v1/generations/{reply.pk}/cancel")

    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response.json()["finish_reason"] == "cancelled"
    (event,) = streams.read_events(reply.pk, after=0)
    assert (event["type"], event["finish_reason"]) == ("done", "cancelled")
    assert streams.cancel_requested(reply.pk)


def test_cancelling_a_running_reply_raises_its_flag_for_the_worker(api_client, conversation):
    _question, reply = add_exchange(conversation, status=Message.Status.RUNNING)

    response = api_client.post(f"/api/v1/generations/{reply.pk}/cancel")

    assert response.status_code == 202
    assert response.json()["status"] == "running"  # the worker ends it within one engine step
    assert streams.cancel_requested(reply.pk)


def test_cancelling_a_finished_reply_leaves_it_as_it_is(api_client, exchange):
    _question, reply = exchange

    response = api_client.post(f"/api/v1/generations/{reply.pk}/cancel")

    assert response.status_code == 202
    assert response.json()["status"] == "completed"
    assert response.json()["content"] == "A chat service."


def test_a_question_is_not_a_generation(api_client, exchange):
    question, _reply = exchange

    response = api_client.post(f"/api/v1/generations/{question.pk}/cancel")

    assert response.status_code == 404
    assert response.json() == {"detail": "Generation not found.", "code": "not_found"}


# Session authentication --------------------------------------------------------------------------------


@pytest.fixture
def session_client(api_user) -> APIClient:
    client = APIClient(enforce_csrf_checks=True)
    client.get("/accounts/login/")  # sets the csrftoken cookie
    client.force_login(api_user)
    client.credentials(HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    return client


def test_a_session_sends_regenerates_edits_switches_and_cancels(session_client, conversation, exchange):
    question, reply = exchange

    regenerated = session_client.post(f"/api/v1/messages/{reply.pk}/regenerate")
    cancelled = session_client.post(f"/api/v1/generations/{regenerated.json()['assistant_message']['id']}/cancel")
    switched = session_client.post(f"/api/v1/messages/{reply.pk}/switch-branch")
    sent = session_client.post(f"/api/v1/conversations/{conversation.pk}/messages", {"content": "More"}, format="json")
    edited = session_client.post(f"/api/v1/messages/{question.pk}/edit", {"content": "Edited"}, format="json")

    statuses = [r.status_code for r in (regenerated, cancelled, switched, sent, edited)]
    assert statuses == [201, 202, 200, 201, 201]


def test_a_session_without_the_csrf_token_changes_nothing(session_client, conversation, exchange):
    question, reply = exchange
    session_client.credentials()
    before = Message.objects.count()

    responses = [
        session_client.post(f"/api/v1/conversations/{conversation.pk}/messages", {"content": "More"}, format="json"),
        session_client.post(f"/api/v1/messages/{reply.pk}/regenerate"),
        session_client.post(f"/api/v1/messages/{question.pk}/edit", {"content": "Edited"}, format="json"),
        session_client.post(f"/api/v1/messages/{question.pk}/switch-branch"),
        session_client.post(f"/api/v1/generations/{reply.pk}/cancel"),
    ]

    assert [r.status_code for r in responses] == [403] * 5
    assert all("CSRF" in r.json()["detail"] for r in responses)
    assert Message.objects.count() == before
    assert not streams.cancel_requested(reply.pk)
