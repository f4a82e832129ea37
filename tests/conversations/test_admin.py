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
