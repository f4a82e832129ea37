"""Projects (issue 12): named groups of a user's chats with their own instructions, which reach the model in each
chat of the project. Scoped to their owner; deleting one keeps its chats."""

from __future__ import annotations

import pytest

from conversations import projects, prompts, services
from conversations.errors import InvalidInput, NotFound
from conversations.models import Conversation, Message, Project
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch, llm_model) -> None:
    monkeypatch.setattr(services, "reply_enqueue", lambda message_id: True)


def test_a_new_chat_started_in_a_project_is_in_it_and_its_instructions_reach_the_model():
    user = UserFactory(custom_instructions="Call me Ada.")
    project = projects.project_create(user=user, name="  Thesis   ", instructions="Answer in British English.")
    assert project.name == "Thesis"  # spaces collapsed

    turn = services.message_send(
        user=user,
        conversation_id=None,
        parent_id=None,
        content="Outline chapter one",
        project_id=project.pk,
        system_prompt="Be brief.",
    )

    conversation = Conversation.objects.get(pk=turn.conversation.pk)
    assert conversation.project == project
    chat = prompts.chat_messages(owner=user, conversation=conversation, path=[turn.user_message])
    assert chat[0] == {"role": "system", "content": "Be brief.\n\nAnswer in British English.\n\nCall me Ada."}
    # A message continuing the chat needs no project id: the chat keeps its project.
    assert [c.pk for c in projects.project_conversations(user=user, project=project)] == [conversation.pk]


def test_someone_elses_project_is_not_found_and_nothing_is_written():
    owner, stranger = UserFactory(), UserFactory()
    project = projects.project_create(user=owner, name="Secret plans", instructions="Whisper.")
    conversation = ConversationFactory(owner=stranger)

    with pytest.raises(NotFound):
        services.message_send(user=stranger, conversation_id=None, parent_id=None, content="Hi", project_id=project.pk)
    with pytest.raises(NotFound):
        services.conversation_set_project(user=stranger, conversation_id=conversation.pk, project_id=project.pk)
    for call in (projects.project_get, projects.project_delete):
        with pytest.raises(NotFound):
            call(user=stranger, project_id=project.pk)
    with pytest.raises(NotFound):
        projects.project_update(user=stranger, project_id=project.pk, name="Mine now", instructions="")
    with pytest.raises(NotFound):
        projects.project_get(user=owner, project_id="not-a-uuid")

    assert Conversation.objects.filter(owner=stranger).count() == 1
    assert Conversation.objects.get(pk=conversation.pk).project is None
    assert Project.objects.get(pk=project.pk).name == "Secret plans"


def test_names_and_instructions_are_checked_and_the_number_of_projects_is_bounded(monkeypatch):
    user = UserFactory()
    for name, instructions, error in [
        ("   ", "", "needs a name"),
        ("x" * (projects.MAX_NAME_CHARS + 1), "", "at most"),
        ("Fine", "y" * (projects.MAX_INSTRUCTIONS_CHARS + 1), "at most"),
    ]:
        with pytest.raises(InvalidInput, match=error):
            projects.project_create(user=user, name=name, instructions=instructions)
    monkeypatch.setattr(projects, "MAX_PROJECTS", 2)
    projects.project_create(user=user, name="One")
    projects.project_create(user=user, name="Two")
    with pytest.raises(InvalidInput, match="2 projects"):
        projects.project_create(user=user, name="Three")
    assert list(projects.project_list(user=user).values_list("name", flat=True)) == ["One", "Two"]


def test_a_chat_moves_in_and_out_of_a_project_and_deleting_the_project_keeps_its_chats():
    user = UserFactory()
    project = projects.project_create(user=user, name="Garden")
    conversation = ConversationFactory(owner=user)
    question, reply = add_exchange(conversation, question="When to plant tulips?", answer="In autumn.")

    moved = services.conversation_set_project(user=user, conversation_id=conversation.pk, project_id=project.pk)
    assert moved.project_id == project.pk
    assert projects.project_delete(user=user, project_id=project.pk) == 1

    kept = Conversation.objects.get(pk=conversation.pk)
    assert kept.project is None
    assert set(Message.objects.filter(conversation=kept).values_list("pk", flat=True)) == {question.pk, reply.pk}
    assert not Project.objects.filter(pk=project.pk).exists()

    other = projects.project_create(user=user, name="Kitchen")
    services.conversation_set_project(user=user, conversation_id=conversation.pk, project_id=other.pk)
    services.conversation_set_project(user=user, conversation_id=conversation.pk, project_id=None)
    assert Conversation.objects.get(pk=conversation.pk).project is None


# The pages ----------------------------------------------------------------------------------------------


def test_project_pages_create_edit_and_delete_with_form_errors_and_are_the_owners_only(client):
    user, stranger = UserFactory(), UserFactory()
    client.force_login(user)

    refused = client.post("/projects/new/", {"name": " ", "instructions": "x"})
    assert refused.status_code == 200
    assert "This field is required." in refused.content.decode()
    created = client.post("/projects/new/", {"name": "Holiday", "instructions": "Plan on a budget."})
    project = Project.objects.get(owner=user)
    assert created.status_code == 302 and created["Location"] == f"/p/{project.pk}/"

    page = client.get(f"/p/{project.pk}/").content.decode()
    assert "Holiday" in page and "Plan on a budget." in page and "No chats yet" in page
    conversation = ConversationFactory(owner=user, project=project, title="Rome in May")
    page = client.get(f"/p/{project.pk}/").content.decode()
    assert "Rome in May" in page
    chat_page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert f'href="/p/{project.pk}/"' in chat_page  # the chip before the title

    edited = client.post(f"/p/{project.pk}/edit/", {"name": "Holidays", "instructions": ""})
    assert edited.status_code == 302
    project.refresh_from_db()
    assert (project.name, project.instructions) == ("Holidays", "")

    confirm = client.get(f"/p/{project.pk}/delete/").content.decode()
    assert "1 chat is kept" in confirm
    assert client.post(f"/p/{project.pk}/delete/").status_code == 302
    assert Conversation.objects.get(pk=conversation.pk).project is None

    mine = projects.project_create(user=stranger, name="Not yours")
    for url in (f"/p/{mine.pk}/", f"/p/{mine.pk}/edit/", f"/p/{mine.pk}/delete/"):
        assert client.get(url).status_code == 404
    assert client.post(f"/p/{mine.pk}/delete/").status_code == 404
    assert Project.objects.filter(pk=mine.pk).exists()
    assert "Not yours" not in client.get("/").content.decode()
