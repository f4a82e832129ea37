"""The chat pages: "/" and "/c/<id>/", rendered on the server for their owner only."""

from __future__ import annotations

import json
import uuid

import pytest
from django.urls import reverse

from conversations.models import Conversation, Message
from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def _setup(llm_model, settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def user(db):
    return UserFactory(display_name="Ada Lovelace")


def make_conversation(owner, *, title="Tea", replies=("Green tea is lovely.",), archived=False) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, title=title, model="smollm2-135m-instruct")
    parent = None
    for reply in replies:
        question = Message.objects.create(conversation=conversation, parent=parent, role="user", content="Tea?")
        parent = Message.objects.create(conversation=conversation, parent=question, role="assistant", content=reply)
    conversation.current_leaf = parent
    conversation.archived = archived
    conversation.save()
    return conversation


def chat_data(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="chat-data" type="application/json">') + len(
        '<script id="chat-data" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


def test_visitors_see_the_landing_page(client, db):
    response = client.get("/")

    assert response.status_code == 200
    assert b"A private ChatGPT" in response.content
    assert b"data-chat-app" not in response.content


def test_signed_in_users_get_a_new_chat_with_their_conversations_in_the_sidebar(client, user):
    mine = make_conversation(user, title="Mine")
    make_conversation(UserFactory(), title="Somebody else's")
    client.force_login(user)

    response = client.get("/")

    assert response.status_code == 200
    assert response.templates[0].name == "chat/chat.html"
    data = chat_data(response)
    assert data["conversation"] is None
    assert data["messages"] == []
    assert [item["id"] for item in data["conversations"]] == [str(mine.pk)]
    assert b"Somebody else" not in response.content
    assert [model["name"] for model in data["models"]] == ["smollm2-135m-instruct"]


def test_archived_conversations_stay_out_of_the_sidebar(client, user):
    make_conversation(user, title="Old stuff", archived=True)
    client.force_login(user)

    response = client.get("/")

    assert chat_data(response)["conversations"] == []


def test_a_conversation_page_renders_its_branch_on_the_server(client, user):
    conversation = make_conversation(user, replies=("First <b>answer</b>", "Second answer"))
    client.force_login(user)

    response = client.get(reverse("conversations:detail", args=[conversation.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "First &lt;b&gt;answer&lt;/b&gt;" in html  # escaped: the page's script renders Markdown safely
    assert "Second answer" in html
    data = chat_data(response)
    assert data["conversation"]["id"] == str(conversation.pk)
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert response["Cache-Control"].startswith("max-age=0")
    assert 'class="toast ' not in html  # the branch is not taken for Django's messages


def test_a_reply_in_progress_is_handed_to_the_script_with_its_seq(client, user):
    conversation = make_conversation(user)
    running = Message.objects.create(
        conversation=conversation,
        parent=conversation.current_leaf.parent,
        role="assistant",
        content="Half a rep",
        content_seq=4,
        status="running",
    )
    conversation.current_leaf = running
    conversation.save()
    client.force_login(user)

    response = client.get(reverse("conversations:detail", args=[conversation.pk]))

    last = chat_data(response)["messages"][-1]
    assert (last["id"], last["status"], last["seq"], last["content"]) == (str(running.pk), "running", 4, "Half a rep")
    assert last["sibling_count"] == 2


def test_someone_elses_conversation_is_not_found_and_reveals_nothing(client, user):
    theirs = make_conversation(UserFactory(), title="Secret plans", replies=("Hidden reply",))
    client.force_login(user)

    response = client.get(reverse("conversations:detail", args=[theirs.pk]))

    assert response.status_code == 404
    assert b"Secret plans" not in response.content
    assert b"Hidden reply" not in response.content


def test_an_unknown_conversation_is_not_found(client, user):
    client.force_login(user)

    response = client.get(f"/c/{uuid.uuid4()}/")

    assert response.status_code == 404


def test_a_malformed_conversation_id_is_not_found(client, user):
    client.force_login(user)

    response = client.get("/c/not-a-uuid/")

    assert response.status_code == 404


def test_visitors_are_sent_to_log_in_from_a_conversation_page(client, user):
    conversation = make_conversation(user)
    url = reverse("conversations:detail", args=[conversation.pk])

    response = client.get(url)

    assert response.status_code == 302
    assert response.url == f"{reverse('accounts:login')}?next={url}"


def test_unverified_users_are_asked_to_verify_when_required(client, settings, db):
    settings.DJINN_REQUIRE_EMAIL_VERIFICATION = True
    client.force_login(UserFactory(email_verified_at=None))

    response = client.get("/")

    assert response.status_code == 302
    assert response.url == reverse("accounts:verification_required")


def test_the_page_loads_the_chat_module_and_its_styles(client, user):
    client.force_login(user)

    html = client.get("/").content.decode()

    assert '<script type="module" src="/static/js/chat/main.js">' in html
    assert 'href="/static/css/chat.css"' in html
    assert 'aria-label="Send message"' in html
    assert '<label class="visually-hidden" for="composer-input">Message Djinn</label>' in html
