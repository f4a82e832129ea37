from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations import selectors, services
from conversations.errors import InvalidInput, NotFound
from conversations.models import Conversation, Message
from conversations.presenters import branch_to_list, conversation_to_dict, message_to_dict
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.factories import UserFactory

pytestmark = pytest.mark.usefixtures("llm_model")


@pytest.fixture
def user():
    return UserFactory()


@pytest.fixture
def stranger():
    return UserFactory()


def titles(conversations):
    return [c.title for c in conversations]


def test_list_shows_pinned_first_then_most_recently_updated_and_only_mine(user, stranger):
    now = timezone.now()
    ConversationFactory(owner=user, title="old", updated_at=now - timedelta(days=2))
    ConversationFactory(owner=user, title="new", updated_at=now)
    ConversationFactory(owner=user, title="pinned old", pinned=True, updated_at=now - timedelta(days=9))
    ConversationFactory(owner=stranger, title="theirs", updated_at=now)

    assert titles(selectors.conversation_list(user=user)) == ["pinned old", "new", "old"]


def test_pages_by_keyset_reach_every_conversation_once_even_when_one_moves_to_the_top(user, stranger):
    now = timezone.now()
    for index in range(25):  # five share one updated_at: the id breaks the tie
        ConversationFactory(owner=user, title=f"chat {index}", updated_at=now - timedelta(minutes=index // 5 * 5 + 1))
    ConversationFactory(owner=user, title="pinned", pinned=True, updated_at=now - timedelta(days=30))
    ConversationFactory(owner=stranger, title="theirs")

    first, cursor = selectors.conversation_page(user=user, limit=10)
    Conversation.objects.filter(owner=user, title="chat 24").update(updated_at=now)  # the oldest is used again
    seen = titles(first)
    while cursor:
        page, cursor = selectors.conversation_page(user=user, limit=10, after=cursor)
        seen += titles(page)

    assert seen[0] == "pinned"
    assert len(seen) == len(set(seen)) == 25  # "chat 24" moved above the pages already read: not repeated
    assert "theirs" not in seen
    assert set(seen) | {"chat 24"} == {"pinned"} | {f"chat {index}" for index in range(25)}


def test_a_malformed_page_cursor_is_invalid_input(user):
    for cursor in ("nonsense", "2_2026-01-01T00:00:00+00:00_" + str(uuid.uuid4()), "1_2026-01-01_x"):
        with pytest.raises(InvalidInput):
            selectors.conversation_page(user=user, after=cursor)


def test_list_separates_archived_conversations(user):
    ConversationFactory(owner=user, title="active")
    ConversationFactory(owner=user, title="archived", archived=True)

    assert titles(selectors.conversation_list(user=user)) == ["active"]
    assert titles(selectors.conversation_list(user=user, archived=True)) == ["archived"]


def test_search_matches_title_words_by_prefix(user):
    ConversationFactory(owner=user, title="Python decorators explained")
    ConversationFactory(owner=user, title="Soup recipes")

    assert titles(selectors.conversation_list(user=user, query="pyth")) == ["Python decorators explained"]
    assert titles(selectors.conversation_list(user=user, query="DECORATOR explained")) == [
        "Python decorators explained"
    ]


def test_search_matches_message_content_in_any_branch(user):
    conversation = ConversationFactory(owner=user, title="Untitled")
    _, reply = add_exchange(conversation, question="hello", answer="Borscht is a beetroot soup.")
    add_exchange(conversation, parent=reply, question="something else")
    ConversationFactory(owner=user, title="Other")

    assert titles(selectors.conversation_list(user=user, query="beetroot")) == ["Untitled"]


def test_search_needs_every_word(user):
    conversation = ConversationFactory(owner=user, title="Travel")
    add_exchange(conversation, question="trains in Italy", answer="They are fast.")

    assert titles(selectors.conversation_list(user=user, query="italy trains")) == ["Travel"]
    assert titles(selectors.conversation_list(user=user, query="italy planes")) == []


def test_search_never_finds_someone_elses_conversations(user, stranger):
    theirs = ConversationFactory(owner=stranger, title="Secret plans")
    add_exchange(theirs, question="the secret password", answer="swordfish")

    assert titles(selectors.conversation_list(user=user, query="secret")) == []
    assert titles(selectors.conversation_list(user=user, query="swordfish")) == []


@pytest.mark.parametrize("query", ["", "   ", "!!! ('&|:*)", "a:* & b"])
def test_search_with_symbols_only_or_tsquery_syntax_is_safe(user, query):
    ConversationFactory(owner=user, title="a b")

    assert len(selectors.conversation_list(user=user, query=query)) <= 1


def test_get_returns_my_conversation(user):
    conversation = ConversationFactory(owner=user)

    assert selectors.conversation_get(user=user, conversation_id=str(conversation.pk)) == conversation


@pytest.mark.parametrize("bad_id", [uuid.uuid4(), "nope", None, 42])
def test_get_of_unknown_or_malformed_ids_is_not_found(user, bad_id):
    with pytest.raises(NotFound):
        selectors.conversation_get(user=user, conversation_id=bad_id)


def test_get_of_someone_elses_conversation_is_not_found_like_an_unknown_one(user, stranger):
    theirs = ConversationFactory(owner=stranger)

    with pytest.raises(NotFound) as theirs_error:
        selectors.conversation_get(user=user, conversation_id=theirs.pk)
    with pytest.raises(NotFound) as unknown_error:
        selectors.conversation_get(user=user, conversation_id=uuid.uuid4())

    assert theirs_error.value.message == unknown_error.value.message


def test_branch_runs_from_the_root_to_the_current_leaf_with_sibling_positions(user):
    conversation = ConversationFactory(owner=user)
    question, reply = add_exchange(conversation, question="q1", answer="a1")
    services.message_regenerate(user=user, message_id=reply.pk)
    regenerated = conversation.messages.filter(parent=question).exclude(pk=reply.pk).get()
    Message.objects.filter(pk=regenerated.pk).update(status=Message.Status.COMPLETED, content="a1 again")
    follow_up = services.message_send(
        user=user, conversation_id=conversation.pk, parent_id=None, content="q2"
    ).user_message
    conversation.refresh_from_db()

    branch = selectors.conversation_branch(user=user, conversation=conversation)

    assert [entry.message.content for entry in branch] == ["q1", "a1 again", "q2", ""]
    assert [(entry.sibling_index, entry.sibling_count) for entry in branch] == [(0, 1), (1, 2), (0, 1), (0, 1)]
    assert branch[1].sibling_ids == [str(reply.pk), str(regenerated.pk)]
    assert branch[2].message == follow_up


def test_branch_follows_a_switch(user):
    conversation = ConversationFactory(owner=user)
    question, _ = add_exchange(conversation, question="q1", answer="a1")
    services.message_edit(user=user, message_id=question.pk, content="q1 edited")
    services.conversation_switch_branch(user=user, message_id=question.pk)
    conversation.refresh_from_db()

    branch = selectors.conversation_branch(user=user, conversation=conversation)

    assert [entry.message.content for entry in branch] == ["q1", "a1"]
    assert (branch[0].sibling_index, branch[0].sibling_count) == (0, 2)


def test_root_siblings_are_this_conversations_only_and_ties_in_time_go_by_id(user):
    conversation, other = ConversationFactory(owner=user), ConversationFactory(owner=user)
    add_exchange(other, question="elsewhere", answer="a")
    first, _ = add_exchange(conversation, question="q1", answer="a1")
    services.message_edit(user=user, message_id=first.pk, content="q1 edited")
    roots = list(conversation.messages.filter(parent=None))
    Message.objects.filter(pk__in=[m.pk for m in roots]).update(created_at=roots[0].created_at)  # same instant
    conversation.refresh_from_db()

    branch = selectors.conversation_branch(user=user, conversation=conversation)

    assert branch[0].sibling_ids == sorted(str(m.pk) for m in roots)
    assert branch[0].sibling_count == 2
    path = selectors.branch_path(conversation_id=conversation.pk, leaf_id=branch[-1].message.pk)
    assert [m.content for m in path] == [entry.message.content for entry in branch]


def test_a_conversation_with_its_branch_in_one_statement_is_the_same_as_the_two_reads(user, django_assert_num_queries):
    conversation = ConversationFactory(owner=user)
    question, reply = add_exchange(conversation, question="q1", answer="a1")
    services.message_regenerate(user=user, message_id=reply.pk)
    services.message_edit(user=user, message_id=question.pk, content="q1 edited")
    empty = ConversationFactory(owner=user)
    for each in (conversation, empty):
        each.refresh_from_db()

        with django_assert_num_queries(1):
            got, branch = selectors.conversation_with_branch(user=user, conversation_id=str(each.pk))

        expected = selectors.conversation_branch(user=user, conversation=each)
        assert (got, got.title, got.current_leaf_id, got.updated_at) == (
            each,
            each.title,
            each.current_leaf_id,
            each.updated_at,
        )
        assert [(e.message, e.message.content, e.sibling_ids) for e in branch] == [
            (e.message, e.message.content, e.sibling_ids) for e in expected
        ]
    assert branch == []
    assert len(selectors.conversation_with_branch(user=user, conversation_id=conversation.pk)[1]) == 2


def test_a_conversation_with_its_branch_is_not_found_for_another_user_or_a_bad_id(user, stranger):
    theirs = ConversationFactory(owner=stranger)
    add_exchange(theirs)

    for conversation_id in (theirs.pk, uuid.uuid4(), "nope"):
        with pytest.raises(NotFound):
            selectors.conversation_with_branch(user=user, conversation_id=conversation_id)


def test_branch_of_someone_elses_conversation_is_not_found(user, stranger):
    theirs = ConversationFactory(owner=stranger)
    add_exchange(theirs)

    with pytest.raises(NotFound):
        selectors.conversation_branch(user=user, conversation=theirs)


def test_message_and_generation_of_someone_else_are_not_found(user, stranger):
    theirs = ConversationFactory(owner=stranger)
    question, reply = add_exchange(theirs)

    for message_id in (question.pk, reply.pk):
        with pytest.raises(NotFound):
            selectors.message_get(user=user, message_id=message_id)
    with pytest.raises(NotFound):
        selectors.generation_get(user=user, generation_id=reply.pk)


def test_generation_is_an_assistant_message(user):
    conversation = ConversationFactory(owner=user)
    question, reply = add_exchange(conversation)

    assert selectors.generation_get(user=user, generation_id=str(reply.pk)) == reply
    with pytest.raises(NotFound):
        selectors.generation_get(user=user, generation_id=question.pk)


def test_presenters_give_plain_json_values(user):
    conversation = ConversationFactory(owner=user, title="T")
    _, reply = add_exchange(conversation, answer="A")
    conversation.refresh_from_db()

    message = message_to_dict(reply)
    listed = branch_to_list(selectors.conversation_branch(user=user, conversation=conversation))

    assert conversation_to_dict(conversation)["current_leaf"] == str(reply.pk)
    assert message["id"] == str(reply.pk)
    assert message["content"] == "A"
    assert message["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
    assert listed[1]["sibling_ids"] == [str(reply.pk)]
    assert listed[1]["sibling_index"] == 0
