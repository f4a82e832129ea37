from __future__ import annotations

import pytest
from django.urls import reverse

from conversations import sharing
from conversations.errors import InvalidInput, NotFound
from conversations.models import Message
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_a_snapshot_holds_the_branch_shown_and_leaves_out_unfinished_replies():
    owner = UserFactory()
    conversation = ConversationFactory(owner=owner)
    _q1, first = add_exchange(conversation, question="One", answer="First answer")
    add_exchange(conversation, parent=first, question="Two", status=Message.Status.RUNNING)

    link = sharing.share_create(user=owner, conversation_id=conversation.pk)

    assert [(m["role"], m["content"]) for m in link.messages] == [
        ("user", "One"),
        ("assistant", "First answer"),
        ("user", "Two"),
    ]
    assert len(link.token) >= 40


def test_a_continued_reply_is_one_reply_in_the_snapshot():
    owner = UserFactory()
    conversation = ConversationFactory(owner=owner)
    _question, cut = add_exchange(conversation, question="Tell a story", answer="Once upon a ")
    going_on = Message.objects.create(
        conversation=conversation, parent=cut, role=Message.Role.ASSISTANT, content="time, a kettle sang."
    )
    conversation.current_leaf = going_on
    conversation.save(update_fields=["current_leaf"])

    link = sharing.share_create(user=owner, conversation_id=conversation.pk)

    assert [(m["role"], m["content"]) for m in link.messages] == [
        ("user", "Tell a story"),
        ("assistant", "Once upon a time, a kettle sang."),
    ]


def test_nobody_shares_or_revokes_another_users_conversation_and_an_empty_chat_has_nothing_to_share(client):
    owner, stranger = UserFactory(), UserFactory()
    conversation = ConversationFactory(owner=owner)
    empty = ConversationFactory(owner=owner)
    add_exchange(conversation)
    link = sharing.share_create(user=owner, conversation_id=conversation.pk)

    with pytest.raises(NotFound):
        sharing.share_create(user=stranger, conversation_id=conversation.pk)
    with pytest.raises(NotFound):
        sharing.share_revoke(user=stranger, share_id=link.pk)
    with pytest.raises(InvalidInput):
        sharing.share_create(user=owner, conversation_id=empty.pk)
    client.force_login(stranger)
    assert client.post(reverse("conversations:settings_shared_links"), {"revoke": link.pk}).status_code == 404
    assert client.post(reverse("conversations:settings_shared_links"), {"revoke": "x"}).status_code == 404
    link.refresh_from_db()
    assert link.revoked_at is None


def test_a_shared_page_is_public_unindexed_and_gone_once_revoked_or_its_chat_deleted(client):
    owner = UserFactory()
    conversation = ConversationFactory(owner=owner, title="Trip")
    add_exchange(conversation)
    link = sharing.share_create(user=owner, conversation_id=conversation.pk)
    url = reverse("conversations:shared", args=[link.token])

    shown = client.get(url)
    assert shown.status_code == 200
    assert shown["X-Robots-Tag"] == "noindex, nofollow, noarchive"
    assert client.get(reverse("conversations:shared", args=["not-a-token"])).status_code == 404
    conversation.delete()
    assert client.get(url).status_code == 404
