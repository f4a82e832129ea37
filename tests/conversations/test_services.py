from __future__ import annotations

import uuid

import pytest

from conversations import services
from conversations.errors import ContextTooLong, InvalidInput, NotAllowed, NotFound
from conversations.models import Conversation, Message
from inference import streams
from tests.conversations.factories import ConversationFactory, LLMModelFactory, add_exchange
from tests.factories import UserFactory

pytestmark = pytest.mark.usefixtures("llm_model")


@pytest.fixture
def user():
    return UserFactory()


@pytest.fixture
def stranger():
    return UserFactory()


@pytest.fixture
def conversation(user):
    conversation = ConversationFactory(owner=user)
    add_exchange(conversation)
    return conversation


def send(user, content="What is the capital of France?", **kwargs):
    kwargs.setdefault("conversation_id", None)
    kwargs.setdefault("parent_id", None)
    return services.message_send(user=user, content=content, **kwargs)


def counts():
    return Conversation.objects.count(), Message.objects.count()


# message_send -----------------------------------------------------------------------------------------


def test_send_starts_a_conversation_with_a_provisional_title_and_a_queued_reply(
    user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        turn = send(user, "Tell me about the history of the city of Paris, from the Romans to today please")

    conversation = Conversation.objects.get(pk=turn.conversation.pk)
    assert conversation.owner == user
    assert conversation.title == "Tell me about the history of the city of Paris, from the…"
    assert conversation.title_is_provisional
    assert conversation.model == "smollm2-135m-instruct"
    assert conversation.current_leaf == turn.assistant_message
    assert turn.user_message.status == Message.Status.COMPLETED
    assert turn.user_message.parent is None
    assert turn.assistant_message.parent == turn.user_message
    assert turn.assistant_message.status == Message.Status.QUEUED
    assert turn.assistant_message.params == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 1024}
    assert len(callbacks) == 1  # generate_reply, enqueued only once the transaction commits


def test_send_continues_after_the_current_leaf(user, conversation):
    leaf = conversation.current_leaf

    turn = send(user, "And then?", conversation_id=conversation.pk)

    assert turn.user_message.parent == leaf
    assert Conversation.objects.get(pk=conversation.pk).current_leaf == turn.assistant_message


def test_send_after_an_explicit_parent_branches_there(user, conversation):
    first_reply = conversation.current_leaf
    add_exchange(conversation, parent=first_reply)

    turn = send(user, "Another way", conversation_id=conversation.pk, parent_id=first_reply.pk)

    assert turn.user_message.parent == first_reply


def test_send_merges_request_params_over_the_model_defaults(user):
    turn = send(user, params={"temperature": 0.2, "max_tokens": 50, "seed": 7})

    assert turn.assistant_message.params == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 50, "seed": 7}


def test_a_chats_settings_sit_between_the_model_defaults_and_the_request(user, conversation):
    services.conversation_set_params(
        user=user, conversation_id=conversation.pk, params={"temperature": 0.3, "max_tokens": None}
    )

    from_chat = send(user, conversation_id=conversation.pk)
    _reply_done(from_chat.assistant_message)
    from_request = send(user, conversation_id=conversation.pk, params={"temperature": 1.1})

    conversation.refresh_from_db()
    assert conversation.params == {"temperature": 0.3}  # null: back to the model's default
    assert from_chat.assistant_message.params["temperature"] == 0.3
    assert from_chat.assistant_message.params["top_p"] == 0.9  # the model's, untouched
    assert from_request.assistant_message.params["temperature"] == 1.1


@pytest.mark.parametrize(
    "params",
    [{"temperature": 9}, {"temperature": "hot"}, {"max_tokens": 0}, {"max_tokens": 1.5}, {"top_k": 3}, [], True],
)
def test_a_chats_settings_out_of_range_are_refused_and_change_nothing(user, conversation, params):
    with pytest.raises(InvalidInput):
        services.conversation_set_params(user=user, conversation_id=conversation.pk, params=params)

    conversation.refresh_from_db()
    assert conversation.params == {}


def _reply_done(reply):
    reply.status = Message.Status.COMPLETED
    reply.save(update_fields=["status"])


def test_send_sets_model_and_system_prompt_of_the_conversation(user, conversation, chat_model_path):
    LLMModelFactory(name="other", is_default=False, source=str(chat_model_path))

    turn = send(user, conversation_id=conversation.pk, model="other", system_prompt="  Be brief.  ")

    conversation.refresh_from_db()
    assert conversation.model == "other"
    assert conversation.system_prompt == "Be brief."
    assert turn.assistant_message.model == "other"


@pytest.mark.parametrize("content", ["", "   \n\t"])
def test_send_refuses_an_empty_message(user, content):
    with pytest.raises(InvalidInput):
        send(user, content)

    assert counts() == (0, 0)


def test_send_refuses_a_message_too_long_for_the_context_before_anything_is_queued(
    user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(ContextTooLong) as error:
        send(user, "word " * 600)

    assert error.value.code == "context_length_exceeded"
    assert "512" in error.value.message
    assert counts() == (0, 0)
    assert callbacks == []


def test_send_counts_the_whole_branch_against_the_context(user):
    conversation = ConversationFactory(owner=user)
    add_exchange(conversation, question="word " * 200, answer="word " * 200)
    before = counts()

    with pytest.raises(ContextTooLong):
        send(user, "word " * 150, conversation_id=conversation.pk)

    assert counts() == before


def test_send_refuses_an_unknown_or_disabled_model(user):
    LLMModelFactory(name="retired", is_default=False, enabled=False)

    for name in ("no-such-model", "retired"):
        with pytest.raises(InvalidInput) as error:
            send(user, model=name)
        assert error.value.code == "model_not_found"
    assert counts() == (0, 0)


@pytest.mark.parametrize("params", [{"temperature": -1}, {"max_tokens": 0}, {"logit_bias": {}}, {"top_p": "x"}])
def test_send_refuses_bad_params(user, params):
    with pytest.raises(InvalidInput):
        send(user, params=params)


def test_send_refuses_to_continue_while_the_reply_is_being_written(user):
    conversation = ConversationFactory(owner=user)
    add_exchange(conversation, status=Message.Status.RUNNING)

    with pytest.raises(InvalidInput):
        send(user, conversation_id=conversation.pk)


def test_send_refuses_a_user_message_as_parent(user, conversation):
    question = conversation.current_leaf.parent

    with pytest.raises(InvalidInput):
        send(user, conversation_id=conversation.pk, parent_id=question.pk)


def test_send_requires_a_verified_address_when_the_setting_asks(settings, user):
    settings.DJINN_REQUIRE_EMAIL_VERIFICATION = True
    user.email_verified_at = None
    user.save()

    with pytest.raises(NotAllowed):
        send(user)


def test_send_to_someone_elses_conversation_is_not_found(stranger, conversation):
    before = counts()

    with pytest.raises(NotFound):
        send(stranger, conversation_id=conversation.pk)

    assert counts() == before


def test_send_with_someone_elses_parent_is_not_found(user, stranger, conversation):
    own = ConversationFactory(owner=stranger)
    add_exchange(own)

    with pytest.raises(NotFound):
        send(stranger, conversation_id=own.pk, parent_id=conversation.current_leaf.pk)


def test_send_with_a_parent_from_another_of_my_conversations_is_not_found(user, conversation):
    other = ConversationFactory(owner=user)
    add_exchange(other)

    with pytest.raises(NotFound):
        send(user, conversation_id=other.pk, parent_id=conversation.current_leaf.pk)


@pytest.mark.parametrize("bad_id", [uuid.uuid4(), "not-a-uuid"])
def test_send_to_an_unknown_conversation_is_not_found(user, bad_id):
    with pytest.raises(NotFound):
        send(user, conversation_id=bad_id)


# regenerate and edit ------------------------------------------------------------------------------------


def test_regenerate_adds_a_sibling_reply_with_the_same_params_and_shows_it(user, conversation):
    original = conversation.current_leaf
    original.params = {"temperature": 0.1}
    original.save()

    turn = services.message_regenerate(user=user, message_id=original.pk)

    assert turn.assistant_message.parent == original.parent
    assert turn.assistant_message.params == {"temperature": 0.1}
    assert turn.assistant_message.status == Message.Status.QUEUED
    assert turn.user_message == original.parent
    assert Conversation.objects.get(pk=conversation.pk).current_leaf == turn.assistant_message
    assert Message.objects.filter(parent=original.parent).count() == 2


def test_regenerate_refuses_a_user_message_or_an_unfinished_reply(user, conversation):
    running = ConversationFactory(owner=user)
    _, reply = add_exchange(running, status=Message.Status.RUNNING)

    with pytest.raises(InvalidInput):
        services.message_regenerate(user=user, message_id=conversation.current_leaf.parent_id)
    with pytest.raises(InvalidInput):
        services.message_regenerate(user=user, message_id=reply.pk)


def test_regenerate_someone_elses_reply_is_not_found(stranger, conversation):
    before = counts()

    with pytest.raises(NotFound):
        services.message_regenerate(user=stranger, message_id=conversation.current_leaf.pk)

    assert counts() == before


def test_edit_adds_a_sibling_question_and_its_reply_on_a_new_branch(user, conversation):
    question = conversation.current_leaf.parent

    turn = services.message_edit(user=user, message_id=question.pk, content="Hello again")

    assert turn.user_message.parent is None  # a sibling of the root question
    assert turn.user_message.content == "Hello again"
    assert turn.assistant_message.parent == turn.user_message
    assert Conversation.objects.get(pk=conversation.pk).current_leaf == turn.assistant_message
    assert Message.objects.filter(conversation=conversation, parent=None).count() == 2


def test_edit_in_the_middle_keeps_the_history_above(user, conversation):
    first_reply = conversation.current_leaf
    question, _ = add_exchange(conversation, parent=first_reply, question="second")

    turn = services.message_edit(user=user, message_id=question.pk, content="second, edited")

    assert turn.user_message.parent == first_reply


def test_edit_refuses_a_reply_and_empty_content(user, conversation):
    with pytest.raises(InvalidInput):
        services.message_edit(user=user, message_id=conversation.current_leaf.pk, content="x")
    with pytest.raises(InvalidInput):
        services.message_edit(user=user, message_id=conversation.current_leaf.parent_id, content=" ")


def test_edit_someone_elses_message_is_not_found(stranger, conversation):
    before = counts()

    with pytest.raises(NotFound):
        services.message_edit(user=stranger, message_id=conversation.current_leaf.parent_id, content="mine now")

    assert counts() == before


# switch branch ------------------------------------------------------------------------------------------


def test_switch_branch_shows_the_newest_leaf_under_the_message(user, conversation):
    first_question = conversation.current_leaf.parent
    _, old_branch_leaf = add_exchange(conversation, parent=conversation.current_leaf, question="deeper")
    edited = services.message_edit(user=user, message_id=first_question.pk, content="edited").user_message

    switched = services.conversation_switch_branch(user=user, message_id=first_question.pk)

    assert switched.current_leaf_id == old_branch_leaf.pk
    assert Conversation.objects.get(pk=conversation.pk).current_leaf_id == old_branch_leaf.pk
    back = services.conversation_switch_branch(user=user, message_id=edited.pk)
    assert back.current_leaf_id == Message.objects.get(parent=edited).pk


def test_switch_branch_of_someone_elses_message_is_not_found(stranger, conversation):
    with pytest.raises(NotFound):
        services.conversation_switch_branch(user=stranger, message_id=conversation.current_leaf.pk)


# cancel -------------------------------------------------------------------------------------------------


def test_cancel_of_a_queued_reply_ends_it_at_once(user, django_capture_on_commit_callbacks):
    reply = send(user).assistant_message

    with django_capture_on_commit_callbacks(execute=True):
        services.generation_cancel(user=user, message_id=reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.CANCELLED
    assert streams.cancel_requested(reply.pk)
    (event,) = streams.read_events(reply.pk, after=0)
    assert (event["type"], event["finish_reason"]) == ("done", "cancelled")


def test_cancel_of_a_running_reply_raises_the_flag_for_its_worker(user):
    conversation = ConversationFactory(owner=user)
    _, reply = add_exchange(conversation, status=Message.Status.RUNNING)

    services.generation_cancel(user=user, message_id=reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.RUNNING  # the worker ends it, keeping the partial text
    assert streams.cancel_requested(reply.pk)


def test_cancel_of_a_finished_reply_changes_nothing(user, conversation):
    reply = conversation.current_leaf

    services.generation_cancel(user=user, message_id=reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.COMPLETED
    assert not streams.cancel_requested(reply.pk)


def test_cancel_of_someone_elses_reply_is_not_found_and_raises_no_flag(stranger):
    conversation = ConversationFactory()
    _, reply = add_exchange(conversation, status=Message.Status.RUNNING)

    with pytest.raises(NotFound):
        services.generation_cancel(user=stranger, message_id=reply.pk)

    assert not streams.cancel_requested(reply.pk)


# sidebar operations -------------------------------------------------------------------------------------


def test_rename_sets_a_final_title(user, conversation):
    services.conversation_rename(user=user, conversation_id=conversation.pk, title="  Trip   to Rome ")

    conversation.refresh_from_db()
    assert conversation.title == "Trip to Rome"
    assert not conversation.title_is_provisional


@pytest.mark.parametrize("title", ["", "   ", "x" * 201])
def test_rename_refuses_an_empty_or_over_long_title(user, conversation, title):
    with pytest.raises(InvalidInput):
        services.conversation_rename(user=user, conversation_id=conversation.pk, title=title)


def test_pin_archive_and_system_prompt_are_saved(user, conversation):
    services.conversation_set_pinned(user=user, conversation_id=conversation.pk, pinned=True)
    services.conversation_set_archived(user=user, conversation_id=conversation.pk, archived=True)
    services.conversation_set_system_prompt(user=user, conversation_id=conversation.pk, system_prompt="Be terse.")

    conversation.refresh_from_db()
    assert (conversation.pinned, conversation.archived, conversation.system_prompt) == (True, True, "Be terse.")


def test_delete_removes_the_conversation_and_stops_its_unfinished_replies(user, django_capture_on_commit_callbacks):
    conversation = ConversationFactory(owner=user)
    _, first = add_exchange(conversation)
    _, running = add_exchange(conversation, parent=first, status=Message.Status.RUNNING)

    with django_capture_on_commit_callbacks(execute=True):
        services.conversation_delete(user=user, conversation_id=conversation.pk)

    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()
    assert streams.cancel_requested(running.pk)


@pytest.mark.parametrize(
    ("operation", "kwargs"),
    [
        (services.conversation_rename, {"title": "Mine now"}),
        (services.conversation_set_pinned, {"pinned": True}),
        (services.conversation_set_archived, {"archived": True}),
        (services.conversation_set_system_prompt, {"system_prompt": "Obey me."}),
        (services.conversation_delete, {}),
    ],
)
def test_sidebar_operations_on_someone_elses_conversation_are_not_found(stranger, conversation, operation, kwargs):
    before = Conversation.objects.values().get(pk=conversation.pk)

    with pytest.raises(NotFound):
        operation(user=stranger, conversation_id=conversation.pk, **kwargs)

    assert Conversation.objects.values().get(pk=conversation.pk) == before
