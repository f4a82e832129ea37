"""/api/v1/conversations: list (pages, search, archived), create, retrieve with the shown branch, update
(rename, pin, archive, system prompt), delete; by API key and by session (CSRF enforced for writes)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from conversations.models import Conversation, Message
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.factories import UserFactory


@pytest.fixture
def session_client(api_user) -> APIClient:
    """``api_user`` signed in by session; CSRF is checked as in production, the token sent as the JS does."""
    client = APIClient(enforce_csrf_checks=True)
    client.get("/accounts/login/")  # sets the csrftoken cookie
    client.force_login(api_user)
    client.credentials(HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    return client


def make_conversations(owner, count: int) -> list[Conversation]:
    """``count`` conversations, the first the most recently active."""
    now = timezone.now()
    return [
        ConversationFactory(owner=owner, title=f"Chat {i}", updated_at=now - timedelta(minutes=i)) for i in range(count)
    ]


def test_the_list_shows_only_ones_own_conversations_newest_first(api_client, api_user):
    mine = make_conversations(api_user, 3)
    ConversationFactory(owner=UserFactory(), title="Not yours")

    response = api_client.get("/api/v1/conversations")

    assert response.status_code == 200
    body = response.json()
    assert [c["id"] for c in body["results"]] == [str(c.pk) for c in mine]
    assert body["next"] is None
    assert body["previous"] is None


def test_pinned_conversations_come_first(api_client, api_user):
    older, newer = ConversationFactory(owner=api_user, pinned=True), ConversationFactory(owner=api_user)
    Conversation.objects.filter(pk=older.pk).update(updated_at=timezone.now() - timedelta(days=1))

    results = api_client.get("/api/v1/conversations").json()["results"]

    assert [c["id"] for c in results] == [str(older.pk), str(newer.pk)]


def test_pages_follow_each_other_without_gap_or_overlap(api_client, api_user):
    conversations = make_conversations(api_user, 5)

    first = api_client.get("/api/v1/conversations?page_size=2").json()
    second = api_client.get(first["next"]).json()
    third = api_client.get(second["next"]).json()

    pages = [first, second, third]
    assert [c["id"] for page in pages for c in page["results"]] == [str(c.pk) for c in conversations]
    assert third["next"] is None
    assert api_client.get(third["previous"]).json() == second
    assert api_client.get(second["previous"]).json() == first


def test_a_page_past_the_end_is_empty(api_client, api_user):
    make_conversations(api_user, 2)

    body = api_client.get("/api/v1/conversations?page=5").json()

    assert body["results"] == []
    assert body["next"] is None


def test_search_finds_words_in_titles_and_messages_as_prefixes(api_client, api_user):
    by_title = ConversationFactory(owner=api_user, title="Python packaging")
    by_message = ConversationFactory(owner=api_user, title="Untitled")
    add_exchange(by_message, question="How do I write a pythonic loop?")
    ConversationFactory(owner=api_user, title="Gardening")

    results = api_client.get("/api/v1/conversations", {"q": "pyth"}).json()["results"]

    assert {c["id"] for c in results} == {str(by_title.pk), str(by_message.pk)}


def test_archived_conversations_are_listed_apart(api_client, api_user):
    archived = ConversationFactory(owner=api_user, archived=True)
    active = ConversationFactory(owner=api_user)

    listed = api_client.get("/api/v1/conversations").json()["results"]
    listed_archived = api_client.get("/api/v1/conversations?archived=true").json()["results"]

    assert [c["id"] for c in listed] == [str(active.pk)]
    assert [c["id"] for c in listed_archived] == [str(archived.pk)]


@pytest.mark.parametrize("query", ["page=0", "page_size=101", "page=x", "archived=maybe", "page=", "archived="])
def test_a_bad_list_query_is_a_400_naming_the_field(api_client, query):
    response = api_client.get(f"/api/v1/conversations?{query}")

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert set(body["field_errors"]) == {query.split("=")[0]}
    assert body["detail"].startswith(query.split("=")[0] + ": ")


def test_creating_starts_a_conversation_with_the_message_and_a_queued_reply(api_client, api_user, llm_model):
    response = api_client.post(
        "/api/v1/conversations",
        {"content": "Hello there, Djinn", "system_prompt": "Be brief.", "params": {"temperature": 0, "max_tokens": 8}},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    conversation = Conversation.objects.get(owner=api_user)
    assert body["conversation"]["id"] == str(conversation.pk)
    assert body["conversation"]["title"] == "Hello there, Djinn"
    assert body["conversation"]["system_prompt"] == "Be brief."
    assert body["conversation"]["model"] == llm_model.name
    assert body["user_message"]["content"] == "Hello there, Djinn"
    assert body["assistant_message"]["status"] == "queued"
    assert body["assistant_message"]["parent"] == body["user_message"]["id"]
    reply = Message.objects.get(pk=body["assistant_message"]["id"])
    assert reply.params == {"temperature": 0, "top_p": 0.9, "max_tokens": 8}


def test_creating_without_content_is_a_400_naming_the_field(api_client, api_user, llm_model):
    response = api_client.post("/api/v1/conversations", {"params": {"top_p": 0}}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert set(body["field_errors"]) == {"content", "params"}
    assert set(body["field_errors"]["params"]) == {"top_p"}
    assert not Conversation.objects.exists()


def test_an_unknown_model_is_a_400_coded_model_not_found(api_client, llm_model):
    response = api_client.post("/api/v1/conversations", {"content": "Hi", "model": "gpt-17"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": "Unknown model 'gpt-17'.", "code": "model_not_found"}


def test_a_message_too_long_for_the_model_is_a_400_coded_context_length_exceeded(api_client, llm_model):
    response = api_client.post("/api/v1/conversations", {"content": "word " * 2000}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "context_length_exceeded"
    assert not Conversation.objects.exists()


def test_a_user_who_may_not_chat_yet_gets_a_403(make_api_client, settings, llm_model):
    settings.DJINN_REQUIRE_EMAIL_VERIFICATION = True
    client = make_api_client(UserFactory(email_verified_at=None))

    response = client.post("/api/v1/conversations", {"content": "Hi"}, format="json")

    assert response.status_code == 403
    assert response.json()["code"] == "not_allowed"


def test_malformed_json_is_a_400_coded_parse_error(api_client, llm_model):
    response = api_client.generic("POST", "/api/v1/conversations", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_retrieving_shows_the_current_branch_with_siblings(api_client, api_user):
    conversation = ConversationFactory(owner=api_user)
    question, _first_reply = add_exchange(conversation, answer="First answer")
    _, second_reply = add_exchange(conversation, parent=None, question="Edited question", answer="Second answer")

    response = api_client.get(f"/api/v1/conversations/{conversation.pk}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(conversation.pk)
    assert body["current_leaf"] == str(second_reply.pk)
    assert [m["content"] for m in body["messages"]] == ["Edited question", "Second answer"]
    assert body["messages"][0]["sibling_index"] == 1
    assert body["messages"][0]["sibling_count"] == 2
    assert body["messages"][0]["sibling_ids"][0] == str(question.pk)


@pytest.mark.parametrize(
    ("conversation_id", "detail"),
    [("00000000-0000-0000-0000-000000000000", "Conversation not found."), ("not-a-uuid", "Not found.")],
)
def test_an_unknown_conversation_is_a_json_404(api_client, conversation_id, detail):
    response = api_client.get(f"/api/v1/conversations/{conversation_id}")

    assert response.status_code == 404
    assert response.json() == {"detail": detail, "code": "not_found"}


def test_the_api_answers_in_english_to_a_user_who_chose_german_and_to_a_german_browser(make_api_client, client):
    # Given a user whose pages are German, calling with a key and with the session of their browser
    user = UserFactory(language="de")
    api_client = make_api_client(user)
    client.force_login(user)
    conversation = ConversationFactory(owner=user)

    # When both ask for what is not there, and one renames a chat to nothing
    by_key = api_client.get("/api/v1/conversations/00000000-0000-0000-0000-000000000000", HTTP_ACCEPT_LANGUAGE="de")
    by_session = client.get(
        "/api/v1/conversations/00000000-0000-0000-0000-000000000000", headers={"accept-language": "de"}
    )
    renamed = api_client.patch(
        f"/api/v1/conversations/{conversation.pk}", {"title": " "}, format="json", HTTP_ACCEPT_LANGUAGE="de"
    )

    # Then the answers are in English, as API clients expect
    assert by_key.json() == {"detail": "Conversation not found.", "code": "not_found"}
    assert by_session.json() == {"detail": "Conversation not found.", "code": "not_found"}
    assert by_key["Content-Language"] == "en"
    assert renamed.status_code == 400
    assert "A title cannot be empty." in str(renamed.json())


def test_renaming_pinning_and_archiving_in_one_request(api_client, api_user):
    conversation = ConversationFactory(owner=api_user, title="Old title")

    response = api_client.patch(
        f"/api/v1/conversations/{conversation.pk}",
        {"title": "  New   title ", "pinned": True, "archived": True, "system_prompt": "Answer in French."},
        format="json",
    )

    assert response.status_code == 200
    conversation.refresh_from_db()
    assert (conversation.title, conversation.title_is_provisional) == ("New title", False)
    assert (conversation.pinned, conversation.archived) == (True, True)
    assert conversation.system_prompt == "Answer in French."
    assert response.json()["title"] == "New title"


def test_an_update_that_fails_changes_nothing(api_client, api_user):
    conversation = ConversationFactory(owner=api_user, title="Kept")

    response = api_client.patch(
        f"/api/v1/conversations/{conversation.pk}", {"title": "   ", "pinned": True}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"
    conversation.refresh_from_db()
    assert (conversation.title, conversation.pinned) == ("Kept", False)


def test_deleting_removes_the_conversation_and_its_messages(api_client, api_user):
    conversation = ConversationFactory(owner=api_user)
    add_exchange(conversation)

    response = api_client.delete(f"/api/v1/conversations/{conversation.pk}")

    assert response.status_code == 204
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()
    assert api_client.get(f"/api/v1/conversations/{conversation.pk}").status_code == 404


def test_without_credentials_every_endpoint_is_a_401(anonymous_api_client, api_user):
    conversation = ConversationFactory(owner=api_user)

    responses = [
        anonymous_api_client.get("/api/v1/conversations"),
        anonymous_api_client.get(f"/api/v1/conversations/{conversation.pk}"),
        anonymous_api_client.delete(f"/api/v1/conversations/{conversation.pk}"),
        anonymous_api_client.get("/api/v1/usage"),
    ]

    assert [r.status_code for r in responses] == [401] * 4
    assert responses[0].json()["code"] == "not_authenticated"
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_a_wrong_key_is_a_401_coded_invalid_api_key(anonymous_api_client):
    anonymous_api_client.credentials(HTTP_AUTHORIZATION="Bearer djn_nothere_" + "x" * 40)

    response = anonymous_api_client.get("/api/v1/conversations")

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"


# Session authentication --------------------------------------------------------------------------------


def test_a_session_reads_and_writes_with_its_csrf_token(session_client, api_user, llm_model):
    conversation = ConversationFactory(owner=api_user)

    listed = session_client.get("/api/v1/conversations")
    renamed = session_client.patch(f"/api/v1/conversations/{conversation.pk}", {"title": "Renamed"}, format="json")
    created = session_client.post("/api/v1/conversations", {"content": "Hi"}, format="json")
    deleted = session_client.delete(f"/api/v1/conversations/{conversation.pk}")

    assert [listed.status_code, renamed.status_code, created.status_code, deleted.status_code] == [200, 200, 201, 204]


def test_a_session_write_without_the_csrf_token_is_refused(session_client, api_user, llm_model):
    conversation = ConversationFactory(owner=api_user, title="Kept")
    session_client.credentials()  # drop the X-CSRFToken header

    responses = [
        session_client.patch(f"/api/v1/conversations/{conversation.pk}", {"title": "Renamed"}, format="json"),
        session_client.post("/api/v1/conversations", {"content": "Hi"}, format="json"),
        session_client.delete(f"/api/v1/conversations/{conversation.pk}"),
    ]

    assert [r.status_code for r in responses] == [403] * 3
    assert responses[0].json()["code"] == "permission_denied"
    assert "CSRF" in responses[0].json()["detail"]
    conversation.refresh_from_db()
    assert conversation.title == "Kept"
    assert Conversation.objects.count() == 1
