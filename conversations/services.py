"""Writes. Keyword-only, scoped to ``user`` (someone else's ids raise NotFound, revealing nothing), each
in one transaction; reply tasks are enqueued only once that transaction has committed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from accounts.selectors import user_can_chat
from conversations import documents, limits, projects, prompts, selectors
from conversations.errors import InvalidInput, NotAllowed, NotFound, Stale
from conversations.models import Conversation, Document, Message
from conversations.tasks import reply_enqueue
from inference import streams
from inference.faults import release_connection
from inference.models import LLMModel
from inference.registry import model_get

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 100_000
MAX_SYSTEM_PROMPT_CHARS = 20_000
MAX_TITLE_CHARS = 200
PROVISIONAL_TITLE_CHARS = 60


@dataclass
class Turn:
    conversation: Conversation
    user_message: Message
    assistant_message: Message


def message_send(
    *,
    user: User,
    conversation_id: UUID | str | None,
    parent_id: UUID | str | None,
    content: str,
    model: str | None = None,
    system_prompt: str | None = None,
    params: dict[str, Any] | None = None,
    expect_leaf: bool = False,
    project_id: UUID | str | None = None,
    document_ids: Any = None,
) -> Turn:
    """Add a user message and a queued reply. ``conversation_id`` None starts a conversation (titled
    provisionally from ``content``); ``parent_id`` None continues after the current leaf. ``model`` and
    ``system_prompt``, when given, become the conversation's from now on. ``expect_leaf``: ``parent_id`` is
    the end of the branch the sender sees, and must still be the conversation's current leaf (the chat page:
    a tab that missed another tab's turn must not fork the conversation behind the user's back).
    ``project_id``: the project a new conversation starts in (ignored when continuing one). ``document_ids``:
    files the user uploaded for this message (documents.document_upload), attached to it and to the chat.

    Raises NotAllowed, NotFound, InvalidInput (empty or over-long message, unknown model or parameter,
    a reply still being written), Stale, ContextTooLong, LimitReached (the plan's limits: nothing is written).
    """
    _check_can_chat(user)
    content = _clean_content(content)
    if system_prompt is not None:
        system_prompt = _clean_system_prompt(system_prompt)
    release_connection()  # the limits and the reservation take trips to Redis
    plan = limits.limits_of(user.pk)
    with limits.reserving(user_id=user.pk, limits=plan) as reservation, transaction.atomic():
        if conversation_id is None:
            llm = _model(model)
            conversation = Conversation(
                owner=user,
                title=_provisional_title(content),
                model=llm.name,
                system_prompt=system_prompt or "",
                project=projects.project_get(user=user, project_id=project_id) if project_id else None,
            )
            parent = None
        else:
            conversation = _locked_conversation(user, conversation_id)
            llm = _model(model or conversation.model)
            conversation.model = llm.name
            if system_prompt is not None:
                conversation.system_prompt = system_prompt
            parent = _parent(conversation, user, parent_id)
            if expect_leaf and conversation.current_leaf_id != (parent.pk if parent else None):
                raise Stale(
                    _(
                        "This chat has new messages, sent from another tab or device: they are shown now. "
                        "Send yours again to continue after them."
                    )
                )
        limits.check_model(plan, llm)
        merged = prompts.request_params(llm, params, conversation.params)
        attaching = documents.documents_to_attach(user=user, document_ids=document_ids)
        path = selectors.branch_path(conversation_id=conversation.pk, leaf_id=parent.pk) if parent else []
        user_message = Message(
            conversation=conversation,
            parent=parent,
            role=Message.Role.USER,
            content=content,
            attachments=documents.attachments(attaching),
        )
        prompt_tokens, sources = _prompt_with_sources(
            user, conversation, [*path, user_message], llm, merged, attaching=attaching
        )
        reply = _reply(conversation, parent=user_message, model=llm, params=merged, sources=sources)
        _reserve(reservation, reply, prompt_tokens, llm)
        # Two writes, on the path to the reply's first token: the conversation (its new leaf is the reply, which
        # PostgreSQL's deferred foreign keys let exist by the commit), then both messages in one INSERT.
        conversation.updated_at = timezone.now()
        conversation.current_leaf = reply
        conversation.save()
        Message.objects.bulk_create([user_message, reply])
        documents.attach(attaching, conversation=conversation, message=user_message)
        _enqueue(reply)
    return Turn(conversation, user_message, reply)


def message_regenerate(*, user: User, message_id: UUID | str) -> Turn:
    """A new reply beside the assistant message ``message_id`` (same question, same parameters), shown
    from now on. Raises NotFound, InvalidInput (not a finished reply), ContextTooLong, LimitReached."""
    _check_can_chat(user)
    release_connection()  # the limits and the reservation take trips to Redis
    plan = limits.limits_of(user.pk)
    with limits.reserving(user_id=user.pk, limits=plan) as reservation, transaction.atomic():
        original = _locked_message(user, message_id)
        conversation = original.conversation
        if original.role != Message.Role.ASSISTANT:
            raise InvalidInput(_("Only a reply can be regenerated."))
        if not original.is_finished:
            raise InvalidInput(_("This reply is still being written: stop it first."))
        question = original.parent
        assert question is not None  # every reply answers a user message
        llm = _allowed_model(plan, conversation.model)
        reply = _another_reply(reservation, user, conversation, llm, parent=question, like=original)
    return Turn(conversation, question, reply)


def message_continue(*, user: User, message_id: UUID | str) -> Turn:
    """Write on where the reply ``message_id`` stopped at its length limit ("continue generating"): a reply to
    it, with its parameters, shown from now on, that the page shows as the same reply and the model reads as
    one (prompts.chat_messages joins them). The Turn's ``user_message`` is the reply continued.
    Raises NotFound, InvalidInput (not a finished reply cut at its limit), ContextTooLong, LimitReached."""
    _check_can_chat(user)
    release_connection()  # the limits and the reservation take trips to Redis
    plan = limits.limits_of(user.pk)
    with limits.reserving(user_id=user.pk, limits=plan) as reservation, transaction.atomic():
        original = _locked_message(user, message_id)
        conversation = original.conversation
        if original.role != Message.Role.ASSISTANT or original.status != Message.Status.COMPLETED:
            raise InvalidInput(_("Only a finished reply can be continued."))
        if original.finish_reason != "length":
            raise InvalidInput(_("This reply is complete: only a reply cut at its length limit can be continued."))
        llm = _allowed_model(plan, conversation.model)
        reply = _another_reply(reservation, user, conversation, llm, parent=original, like=original)
    return Turn(conversation, original, reply)


def message_edit(*, user: User, message_id: UUID | str, content: str) -> Turn:
    """A new user message beside ``message_id`` with ``content``, and a queued reply to it: a new branch,
    shown from now on. Raises NotFound, InvalidInput, ContextTooLong, LimitReached."""
    _check_can_chat(user)
    content = _clean_content(content)
    release_connection()  # the limits and the reservation take trips to Redis
    plan = limits.limits_of(user.pk)
    with limits.reserving(user_id=user.pk, limits=plan) as reservation, transaction.atomic():
        original = _locked_message(user, message_id)
        conversation = original.conversation
        if original.role != Message.Role.USER:
            raise InvalidInput(_("Only your own messages can be edited."))
        llm = _allowed_model(plan, conversation.model)
        path = (
            selectors.branch_path(conversation_id=conversation.pk, leaf_id=original.parent_id)
            if original.parent_id
            else []
        )
        edited = Message(
            conversation=conversation,
            parent=original.parent,
            role=Message.Role.USER,
            content=content,
            attachments=original.attachments,  # its files stay with it
        )
        last_reply = original.children.filter(role=Message.Role.ASSISTANT).order_by("-created_at").first()
        params = last_reply.params if last_reply else prompts.request_params(llm, None)
        prompt_tokens, sources = _prompt_with_sources(user, conversation, [*path, edited], llm, params, attaching=[])
        conversation.updated_at = timezone.now()
        conversation.save(update_fields=["updated_at"])
        edited.save()
        reply = _reply(conversation, parent=edited, model=llm, params=params, sources=sources)
        _reserve(reservation, reply, prompt_tokens, llm)
        _queue_reply(conversation, reply)
    return Turn(conversation, edited, reply)


def generation_cancel(*, user: User, message_id: UUID | str) -> None:
    """Stop the reply ``message_id``. Its worker notices within one engine step and keeps the partial
    text; a reply no worker has taken yet ends at once. A finished reply is left as it is."""
    message = selectors.generation_get(user=user, generation_id=message_id)
    if message.is_finished:
        return
    # The flag first: if a worker takes the reply between here and the update below, it sees the flag.
    streams.request_cancel(message.pk)
    with transaction.atomic():
        now = timezone.now()
        cancelled = Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED).update(
            status=Message.Status.CANCELLED, finish_reason="cancelled", updated_at=now
        )
        if cancelled:
            transaction.on_commit(lambda: streams.StreamWriter(message.pk).done(finish_reason="cancelled", usage=None))
            transaction.on_commit(lambda: limits.release(user_id=user.pk, generation_id=message.pk))


def conversation_switch_branch(*, user: User, message_id: UUID | str) -> Conversation:
    """Show the branch through ``message_id``, down to its newest leaf (as the user last left it)."""
    with transaction.atomic():
        message = _locked_message(user, message_id)
        conversation = message.conversation
        conversation.current_leaf_id = selectors.newest_leaf(conversation_id=conversation.pk, message_id=message.pk)
        conversation.save(update_fields=["current_leaf"])
    return conversation


def conversation_rename(*, user: User, conversation_id: UUID | str, title: str) -> Conversation:
    title = " ".join((title or "").split())
    if not title:
        raise InvalidInput(_("A title cannot be empty."))
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidInput(_("A title has at most %(count)d characters.") % {"count": MAX_TITLE_CHARS})
    return _update(user, conversation_id, title=title, title_is_provisional=False)


def conversation_set_pinned(*, user: User, conversation_id: UUID | str, pinned: bool) -> Conversation:
    return _update(user, conversation_id, pinned=bool(pinned))


def conversation_set_archived(*, user: User, conversation_id: UUID | str, archived: bool) -> Conversation:
    return _update(user, conversation_id, archived=bool(archived))


def conversation_set_system_prompt(*, user: User, conversation_id: UUID | str, system_prompt: str) -> Conversation:
    return _update(user, conversation_id, system_prompt=_clean_system_prompt(system_prompt))


def conversation_set_params(*, user: User, conversation_id: UUID | str, params: Any) -> Conversation:
    """The chat's temperature and max_tokens from now on (null: the model's default). Raises InvalidInput."""
    return _update(user, conversation_id, params=prompts.conversation_params(params))


def conversation_set_project(*, user: User, conversation_id: UUID | str, project_id: UUID | str | None) -> Conversation:
    """Move the chat into one of the user's projects (None: out of any). Raises NotFound."""
    with transaction.atomic():
        conversation = _locked_conversation(user, conversation_id)
        conversation.project = projects.project_get(user=user, project_id=project_id) if project_id else None
        conversation.updated_at = timezone.now()
        conversation.save(update_fields=["project", "updated_at"])
    return conversation


def conversation_delete(*, user: User, conversation_id: UUID | str) -> None:
    """Delete the conversation and all its messages; replies still being written are stopped."""
    with transaction.atomic():
        conversation = _locked_conversation(user, conversation_id)
        unfinished = list(
            conversation.messages.filter(status__in=[Message.Status.QUEUED, Message.Status.RUNNING]).values_list(
                "pk", "status"
            )
        )
        conversation.delete()

        def stop() -> None:
            for pk, status in unfinished:
                streams.request_cancel(pk)
                if status == Message.Status.QUEUED:  # never ran; a running one is charged by its worker
                    limits.release(user_id=user.pk, generation_id=pk)

        transaction.on_commit(stop)


# Helpers -------------------------------------------------------------------------------------------------


def _check_can_chat(user: User) -> None:
    if not user_can_chat(user):
        raise NotAllowed(_("Verify your e-mail address to chat."))


def _clean_content(content: str) -> str:
    if not isinstance(content, str) or not content.strip():
        raise InvalidInput(_("A message cannot be empty."))
    if len(content) > MAX_MESSAGE_CHARS:
        raise InvalidInput(_("A message has at most %(count)d characters.") % {"count": MAX_MESSAGE_CHARS})
    return content.replace("\x00", "")


def _clean_system_prompt(system_prompt: str) -> str:
    if not isinstance(system_prompt, str):
        raise InvalidInput(_("The system prompt must be text."))
    if len(system_prompt) > MAX_SYSTEM_PROMPT_CHARS:
        raise InvalidInput(_("A system prompt has at most %(count)d characters.") % {"count": MAX_SYSTEM_PROMPT_CHARS})
    return system_prompt.replace("\x00", "").strip()


def _provisional_title(content: str) -> str:
    words = content.split()
    title = ""
    for word in words:
        if len(title) + len(word) + 1 > PROVISIONAL_TITLE_CHARS:
            return (title or word[:PROVISIONAL_TITLE_CHARS]) + "…"
        title = f"{title} {word}".strip()
    return title


def _model(name: str | None) -> LLMModel:
    try:
        return model_get(name)
    except LLMModel.DoesNotExist:
        message = _("Unknown model %(name)s.") % {"name": repr(name)} if name else _("No model is available.")
        raise InvalidInput(message, "model_not_found") from None


def _locked_conversation(user: User, conversation_id: UUID | str) -> Conversation:
    """The user's conversation, locked, so two sends to one conversation line up instead of both branching off
    the same leaf."""
    return selectors.conversation_get(user=user, conversation_id=conversation_id, lock=True)


def _locked_message(user: User, message_id: UUID | str) -> Message:
    message = selectors.message_get(user=user, message_id=message_id)
    message.conversation = _locked_conversation(user, message.conversation_id)
    return message


def _parent(conversation: Conversation, user: User, parent_id: UUID | str | None) -> Message | None:
    if parent_id is None:
        parent = conversation.current_leaf
    else:
        parent = selectors.message_get(user=user, message_id=parent_id)
        if parent.conversation_id != conversation.pk:
            raise NotFound(_("Message not found."))
    if parent is None:
        return None
    if parent.role != Message.Role.ASSISTANT:
        raise InvalidInput(_("A message follows a reply."))
    if not parent.is_finished:
        raise InvalidInput(_("The reply is still being written: wait for it or stop it first."))
    return parent


def _reply(
    conversation: Conversation,
    *,
    parent: Message,
    model: LLMModel,
    params: dict[str, Any],
    sources: list[dict[str, Any]] | None = None,
) -> Message:
    """A queued reply to ``parent`` (not saved yet); ``sources``: the passages of the chat's documents its prompt
    holds."""
    return Message(
        conversation=conversation,
        parent=parent,
        role=Message.Role.ASSISTANT,
        status=Message.Status.QUEUED,
        model=model.name,
        params=params,
        sources=sources or [],
    )


def _allowed_model(plan: limits.Limits, name: str) -> LLMModel:
    """The registry's model ``name``, if ``plan`` lets the user use it. Raises InvalidInput, LimitReached."""
    llm = _model(name)
    limits.check_model(plan, llm)
    return llm


def _another_reply(
    reservation: limits.Reservation,
    user: User,
    conversation: Conversation,
    llm: LLMModel,
    *,
    parent: Message,
    like: Message,
) -> Message:
    """A reply after ``parent`` with the parameters and document passages of the reply ``like``, reserved and
    queued, shown from now on (regenerate: beside ``like``; continue: after it). Raises ContextTooLong."""
    path = selectors.branch_path(conversation_id=conversation.pk, leaf_id=parent.pk)
    chat = prompts.chat_messages(owner=user, conversation=conversation, path=path, sources=like.sources)
    prompt_tokens = prompts.check_fits(chat, llm)
    conversation.updated_at = timezone.now()
    conversation.save(update_fields=["updated_at"])
    reply = _reply(conversation, parent=parent, model=llm, params=like.params, sources=like.sources)
    _reserve(reservation, reply, prompt_tokens, llm)
    _queue_reply(conversation, reply)
    return reply


def _prompt_with_sources(
    user: User,
    conversation: Conversation,
    path: list[Message],
    llm: LLMModel,
    params: dict[str, Any],
    *,
    attaching: list[Document],
) -> tuple[int, list[dict[str, Any]]]:
    """The prompt tokens of a reply to the question ending ``path``, and the passages of the chat's documents
    chosen for it (in what room the chat leaves). Raises ContextTooLong, InvalidInput."""
    prompt_tokens = prompts.check_fits(prompts.chat_messages(owner=user, conversation=conversation, path=path), llm)
    sources = documents.select_sources(
        conversation=conversation,
        attaching=attaching,
        question=path[-1].content,
        model=llm,
        prompt_tokens=prompt_tokens,
        max_tokens=params.get("max_tokens"),
    )
    if sources:
        chat = prompts.chat_messages(owner=user, conversation=conversation, path=path, sources=sources)
        prompt_tokens = prompts.check_fits(chat, llm)
    return prompt_tokens, sources


def _reserve(reservation: limits.Reservation, reply: Message, prompt_tokens: int, model: LLMModel) -> None:
    """Reserve ``reply`` against the plan, with an estimate of prompt plus the most it may write; under a plan
    whose context is shorter than the model's, its ``max_tokens`` is capped to fit it."""
    room = limits.check_plan_context(reservation.limits, prompt_tokens, model)
    max_tokens = min(int(reply.params.get("max_tokens") or room), room)
    if reservation.limits.max_context:
        reply.params = {**reply.params, "max_tokens": max_tokens}
    reservation.take([reply.pk], tokens_each=prompt_tokens + max_tokens, api=False)


def _queue_reply(conversation: Conversation, reply: Message) -> None:
    reply.save(force_insert=True)
    conversation.current_leaf = reply
    conversation.save(update_fields=["current_leaf"])
    _enqueue(reply)


def _enqueue(reply: Message) -> None:
    transaction.on_commit(lambda: reply_enqueue(reply.pk))


def _update(user: User, conversation_id: UUID | str, **fields: Any) -> Conversation:
    with transaction.atomic():
        conversation = _locked_conversation(user, conversation_id)
        for name, value in fields.items():
            setattr(conversation, name, value)
        conversation.save(update_fields=list(fields))
    return conversation


def message_feedback(*, user: User, message_id: UUID | str, rating: int | None) -> Message:
    """The user's thumbs up (1), down (-1) or neither (None) on one of their finished replies. Raises NotFound,
    InvalidInput (not a finished reply, or another rating)."""
    if rating not in (1, -1, None):
        raise InvalidInput(_("rating must be 1, -1 or null."))
    message = selectors.message_get(user=user, message_id=message_id)
    if message.role != Message.Role.ASSISTANT or not message.is_finished:
        raise InvalidInput(_("Only a finished reply can be rated."))
    message.feedback = rating
    message.save(update_fields=["feedback", "updated_at"])
    return message
