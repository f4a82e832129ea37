from __future__ import annotations

import pytest
from django.urls import reverse

from tests.conversations.factories import ConversationFactory, add_exchange
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_conversations_are_searchable_by_owner_email(admin_client):
    ConversationFactory(owner=UserFactory(email="alice@example.com"), title="Alice's chat")
    ConversationFactory(owner=UserFactory(email="bob@example.com"), title="Bob's chat")

    response = admin_client.get(reverse("admin:conversations_conversation_changelist"), {"q": "alice@"})

    assert response.status_code == 200
    assert b"Alice&#x27;s chat" in response.content
    assert b"Bob&#x27;s chat" not in response.content


def test_a_conversation_page_lists_its_messages_read_only(admin_client):
    conversation = ConversationFactory()
    add_exchange(conversation, question="What is up?", answer="The sky.")

    response = admin_client.get(reverse("admin:conversations_conversation_change", args=[conversation.pk]))

    assert response.status_code == 200
    assert b"What is up?" in response.content
    assert b"The sky." in response.content
    assert b'name="messages-0-content"' not in response.content  # shown, not editable


def test_messages_filter_by_status(admin_client):
    conversation = ConversationFactory()
    add_exchange(conversation, status="failed")

    response = admin_client.get(
        reverse("admin:conversations_message_changelist"), {"status__exact": "failed", "role__exact": "assistant"}
    )

    assert response.status_code == 200
    assert b"1 message" in response.content


def staff_with(*codenames: str):
    from django.contrib.auth.models import Permission

    staff = UserFactory(is_staff=True, email="support@example.com")
    staff.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return staff


def test_staff_without_the_content_permission_see_a_conversation_but_not_what_was_written(client):
    conversation = ConversationFactory(owner=UserFactory(email="ada@example.com"), system_prompt="Secret persona")
    _question, reply = add_exchange(conversation, question="My private question", answer="A private answer")
    client.force_login(staff_with("view_conversation", "view_message", "change_conversation"))

    page = client.get(reverse("admin:conversations_conversation_change", args=[conversation.pk])).content.decode()
    message_page = client.get(reverse("admin:conversations_message_change", args=[reply.pk]))

    assert "My private question" not in page and "A private answer" not in page
    assert "Secret persona" not in page
    assert "assistant" in page  # the messages' metadata is there
    assert message_page.status_code == 200
    assert "A private answer" not in message_page.content.decode()


def test_staff_with_the_content_permission_read_it_but_can_never_edit_a_message(client):
    conversation = ConversationFactory()
    _question, reply = add_exchange(conversation, answer="A private answer")
    client.force_login(staff_with("view_conversation", "view_message", "change_message", "view_message_content"))

    page = client.get(reverse("admin:conversations_message_change", args=[reply.pk]))
    posted = client.post(reverse("admin:conversations_message_change", args=[reply.pk]), {"content": "Rewritten"})

    reply.refresh_from_db()
    assert "A private answer" in page.content.decode()
    assert 'name="content"' not in page.content.decode()
    assert posted.status_code == 403
    assert reply.content == "A private answer"


def test_every_staff_view_of_a_conversation_is_in_an_audit_log_admins_can_read_and_nobody_can_change(client):
    from django.test import Client

    from conversations.models import StaffAccess

    admin_client = Client()
    admin_client.force_login(UserFactory(is_staff=True, is_superuser=True))

    owner = UserFactory(email="ada@example.com")
    conversation = ConversationFactory(owner=owner)
    _question, reply = add_exchange(conversation)
    support = staff_with("view_conversation", "view_message")
    client.force_login(support)

    client.get(reverse("admin:conversations_conversation_change", args=[conversation.pk]))
    client.get(reverse("admin:conversations_message_change", args=[reply.pk]))
    client.get(reverse("admin:conversations_conversation_changelist"))  # a list of titles is not a view of one

    logged = list(
        StaffAccess.objects.order_by("at").values_list("staff_email", "owner_email", "message_id", "content_shown")
    )
    assert logged == [
        ("support@example.com", "ada@example.com", None, False),
        ("support@example.com", "ada@example.com", reply.pk, False),
    ]
    log_page = admin_client.get(reverse("admin:conversations_staffaccess_changelist"))
    assert log_page.status_code == 200
    assert "support@example.com" in log_page.content.decode()
    entry = StaffAccess.objects.first()
    assert (
        admin_client.post(
            reverse("admin:conversations_staffaccess_delete", args=[entry.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert (
        client.get(reverse("admin:conversations_staffaccess_changelist")).status_code == 403
    )  # support cannot read it
    owner.delete()
    assert StaffAccess.objects.filter(owner_email="ada@example.com").count() == 2  # kept after the account goes


def test_without_the_content_permission_titles_are_hidden_too_and_not_searchable(client):
    conversation = ConversationFactory(owner=UserFactory(email="ada@example.com"), title="My divorce lawyer")
    _question, reply = add_exchange(conversation)
    client.force_login(staff_with("view_conversation", "view_message"))

    pages = [
        client.get(reverse("admin:conversations_conversation_changelist")),
        client.get(reverse("admin:conversations_conversation_changelist"), {"q": "ada@"}),
        client.get(reverse("admin:conversations_conversation_change", args=[conversation.pk])),
        client.get(reverse("admin:conversations_message_changelist")),
        client.get(reverse("admin:conversations_message_change", args=[reply.pk])),
    ]
    searched = client.get(reverse("admin:conversations_conversation_changelist"), {"q": "divorce"})

    assert all(page.status_code == 200 for page in pages)
    assert not any("divorce" in page.content.decode() for page in pages)
    assert str(conversation.pk)[:8] in pages[1].content.decode()  # found by its owner's address
    assert "0 conversations" in searched.content.decode()


def test_staff_take_a_shared_link_down_and_a_deactivated_users_links_stop(admin_client, client):
    from conversations import sharing

    owner = UserFactory()
    conversation = ConversationFactory(owner=owner)
    add_exchange(conversation)
    first = sharing.share_create(user=owner, conversation_id=conversation.pk)
    second = sharing.share_create(user=owner, conversation_id=conversation.pk)

    admin_client.post(
        reverse("admin:conversations_sharedlink_changelist"), {"action": "revoke", "_selected_action": [first.pk]}
    )
    assert client.get(reverse("conversations:shared", args=[first.token])).status_code == 404
    assert client.get(reverse("conversations:shared", args=[second.token])).status_code == 200
    owner.is_active = False
    owner.save()
    assert client.get(reverse("conversations:shared", args=[second.token])).status_code == 404


def test_staff_cannot_move_a_chat_into_another_users_project(admin_client):
    from conversations import projects
    from tests.factories import UserFactory

    conversation = ConversationFactory()
    theirs = projects.project_create(user=UserFactory(), name="Someone else's")
    url = reverse("admin:conversations_conversation_change", args=[conversation.pk])

    page = admin_client.get(url).content.decode()
    assert 'name="project"' not in page  # shown read-only, not a choice of every user's projects
    admin_client.post(url, {"project": str(theirs.pk), "model": conversation.model, "title": conversation.title})
    conversation.refresh_from_db()
    assert conversation.project_id is None
