"""Factories for conversations, messages and registry entries (the default entry is the one the
migration creates; transactional tests flush it, so they get it back through LLMModelFactory)."""

from __future__ import annotations

from typing import Any

import factory

from conversations.models import Conversation, Message
from inference.models import LLMModel
from tests.factories import UserFactory

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


class LLMModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LLMModel
        django_get_or_create = ("name",)

    name = DEFAULT_MODEL_NAME
    display_name = "SmolLM2 135M Instruct"
    source = ""
    default_params = factory.LazyFunction(lambda: {"temperature": 0.7, "top_p": 0.9, "max_tokens": 1024})
    enabled = True
    is_default = True


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation

    owner = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Conversation {n}")
    model = DEFAULT_MODEL_NAME


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    role = Message.Role.USER
    content = factory.Sequence(lambda n: f"Message {n}")
    status = Message.Status.COMPLETED


def add_exchange(
    conversation: Conversation,
    *,
    parent: Message | None = None,
    question: str = "Hello there",
    answer: str = "Hi! How can I help you today?",
    status: str = Message.Status.COMPLETED,
) -> tuple[Message, Message]:
    """A user message under ``parent`` and its reply (``status``); the reply becomes the current leaf."""
    user_message = MessageFactory(conversation=conversation, parent=parent, role=Message.Role.USER, content=question)
    reply = MessageFactory(
        conversation=conversation,
        parent=user_message,
        role=Message.Role.ASSISTANT,
        content=answer if status == Message.Status.COMPLETED else "",
        status=status,
        model=conversation.model,
    )
    conversation.current_leaf = reply
    conversation.save(update_fields=["current_leaf"])
    return user_message, reply


def queued_turn(owner: Any, *, content: str = "Hello there", params: dict[str, Any] | None = None) -> Message:
    """A new conversation whose first message awaits its reply: the reply, queued, as message_send leaves it
    but with no task sent to the broker (a test that runs the reply itself plays the worker)."""
    conversation = ConversationFactory(owner=owner, title=content[:60], title_is_provisional=True)
    _question, reply = add_exchange(conversation, question=content, status=Message.Status.QUEUED)
    reply.params = params or {}
    reply.save(update_fields=["params"])
    return reply
