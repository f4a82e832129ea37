"""Cross-user: a key of user A never reads or acts on anything of user B, on every /api/v1 endpoint. B's
ids answer exactly what unknown ids answer (404, same body), and B's data stays as it was."""

from __future__ import annotations

import uuid

import pytest

from accounts import services as account_services
from accounts.models import ApiKey
from accounts.usage import usage_record
from conversations.models import Conversation, Message
from inference import streams
from tests.conversations.factories import ConversationFactory, add_exchange

pytestmark = pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")


@pytest.fixture
def theirs(other_api_user, llm_model) -> dict[str, str]:
    """User B's objects, by the name the URLs below use."""
    conversation = ConversationFactory(owner=other_api_user, title="Grace's secret plans", model=llm_model.name)
    question, reply = add_exchange(conversation, question="Where is the compiler?", answer="Under the desk.")
    _, running = add_exchange(conversation, parent=reply, question="And now?", status=Message.Status.RUNNING)
    api_key, _key = account_services.api_key_create(user=other_api_user, name="Grace's key")
    return {
        "conversation": str(conversation.pk),
        "question": str(question.pk),
        "reply": str(reply.pk),
        "running": str(running.pk),
        "key": str(api_key.pk),
    }


@pytest.fixture
def mine(api_user, llm_model) -> dict[str, str]:
    conversation = ConversationFactory(owner=api_user, model=llm_model.name)
    _question, reply = add_exchange(conversation)
    return {"conversation": str(conversation.pk), "reply": str(reply.pk)}


def snapshot() -> list[tuple]:
    """Everything a request could change, of everyone."""
    conversations = list(Conversation.objects.order_by("pk").values_list())
    messages = list(Message.objects.order_by("pk").values_list())
    keys = list(ApiKey.objects.order_by("pk").values_list("pk", "name", "revoked_at"))
    return [conversations, messages, keys]


# (method, path, body): {name} is filled with B's object of that name, or with an unknown id.
REQUESTS = [
    ("get", "/api/v1/conversations/{conversation}", None),
    ("patch", "/api/v1/conversations/{conversation}", {"title": "Mine now", "pinned": True, "archived": True}),
    ("delete", "/api/v1/conversations/{conversation}", None),
    ("post", "/api/v1/conversations/{conversation}/messages", {"content": "Tell me everything"}),
    ("post", "/api/v1/messages/{reply}/regenerate", None),
    ("post", "/api/v1/messages/{question}/edit", {"content": "Rewritten"}),
    ("post", "/api/v1/messages/{reply}/switch-branch", None),
    ("post", "/api/v1/generations/{running}/cancel", None),
    ("get", "/api/v1/generations/{reply}/events", None),
    ("get", "/api/v1/generations/{running}/events?after=0", None),
]


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
def test_someone_elses_object_answers_like_an_unknown_one(api_client, theirs, method, path, body):
    before = snapshot()
    unknown = {name: str(uuid.uuid4()) for name in theirs}

    response = getattr(api_client, method)(path.format(**theirs), body, format="json")
    response_for_unknown = getattr(api_client, method)(path.format(**unknown), body, format="json")

    assert response.status_code == 404
    assert response.json() == response_for_unknown.json()
    assert not any(value in response.content.decode() for value in theirs.values())
    assert snapshot() == before
    assert not streams.cancel_requested(theirs["running"])


def test_a_message_cannot_follow_someone_elses_reply(api_client, mine, theirs):
    before = snapshot()

    response = api_client.post(
        f"/api/v1/conversations/{mine['conversation']}/messages",
        {"content": "Continue their chat", "parent": theirs["reply"]},
        format="json",
    )

    assert response.status_code == 404
    assert snapshot() == before


def test_someone_elses_key_cannot_be_revoked(api_client, theirs):
    response = api_client.delete(f"/api/v1/keys/{theirs['key']}")

    assert response.status_code == 404
    assert ApiKey.objects.get(pk=theirs["key"]).revoked_at is None


def test_lists_searches_and_usage_show_only_ones_own(api_client, api_user, other_api_user, mine, theirs):
    for user, tokens in ((api_user, 3), (other_api_user, 1000)):
        usage_record(
            user_id=user.pk,
            generation_id=uuid.uuid4(),
            model="m",
            source="chat",
            prompt_tokens=tokens,
            completion_tokens=0,
        )

    listed = api_client.get("/api/v1/conversations").json()
    searched = api_client.get("/api/v1/conversations", {"q": "compiler"}).json()
    searched_archived = api_client.get("/api/v1/conversations", {"q": "secret", "archived": "true"}).json()
    keys = api_client.get("/api/v1/keys").json()
    usage = api_client.get("/api/v1/usage").json()

    assert [c["id"] for c in listed["results"]] == [mine["conversation"]]
    assert searched["results"] == searched_archived["results"] == []
    assert "Grace's key" not in [key["name"] for key in keys]
    assert (usage["generations"], usage["prompt_tokens"]) == (1, 3)


def test_the_other_user_still_sees_all_of_theirs(other_api_client, theirs):
    response = other_api_client.get(f"/api/v1/conversations/{theirs['conversation']}")

    assert response.status_code == 200
    assert response.json()["title"] == "Grace's secret plans"
