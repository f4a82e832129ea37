"""What the model is shown for a reply, and whether it fits the model's context.

Shared by the services (which refuse a too-long prompt before anything is queued) and the reply task
(which checks again against the engine it actually runs on).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.utils.translation import gettext as _

from accounts.models import User
from conversations.errors import ContextTooLong, InvalidInput
from conversations.models import Conversation, Message
from inference import runtime
from inference.engine import InvalidRequestError, SamplingParams
from inference.models import PARAM_KEYS, LLMModel

# A prompt must leave room for at least this many reply tokens.
MIN_REPLY_TOKENS = 16
# Sampling parameters a request may set: the registry's keys plus per-request ones.
REQUEST_PARAM_KEYS = (*PARAM_KEYS, "seed", "stop")


def chat_messages(
    *, owner: User, conversation: Conversation, path: Iterable[Message], sources: list[dict[str, Any]] | None = None
) -> list[dict[str, str]]:
    """The chat for the model: one system message (the conversation's system prompt, its project's
    instructions, the owner's custom instructions, then the reply's ``sources``: passages of the chat's
    documents; none when all are empty, so the model's template may add its own), then the branch."""
    project = conversation.project.instructions.strip() if conversation.project_id else ""
    parts = (conversation.system_prompt.strip(), project, owner.custom_instructions.strip(), sources_text(sources))
    system = "\n\n".join(part for part in parts if part)
    messages = [{"role": "system", "content": system}] if system else []
    for message in path:
        if message.role == Message.Role.ASSISTANT and messages and messages[-1]["role"] == Message.Role.ASSISTANT:
            # A reply continued ("continue generating") is one reply to the model: its parts joined.
            messages[-1] = {"role": message.role, "content": messages[-1]["content"] + message.content}
        else:
            messages.append({"role": message.role, "content": message.content})
    return messages


def sources_text(sources: list[dict[str, Any]] | None) -> str:
    """The passages of the chat's documents chosen for a reply (documents.select_sources), numbered for citing."""
    if not sources:
        return ""
    blocks = []
    for number, source in enumerate(sources, start=1):
        where = f", page {source['page']}" if source.get("page") else ""
        blocks.append(f"[{number}] {source['name']}{where}:\n{source['text']}")
    return (
        "Passages from the documents attached to this chat, found for the user's last message. Answer from them "
        "when they help, and cite a passage by its number, like [1].\n\n" + "\n\n".join(blocks)
    )


def continues_reply(messages: list[dict[str, str]]) -> bool:
    """Whether the chat ends in a reply to write on ("continue generating") rather than a question."""
    return bool(messages) and messages[-1]["role"] == Message.Role.ASSISTANT


def check_fits(messages: list[dict[str, str]], model: LLMModel) -> int:
    """Prompt tokens of ``messages`` for ``model``; raises ContextTooLong when they leave no room for a reply,
    InvalidInput when the model's chat template cannot render them."""
    prompt_tokens = count_tokens(messages, model, continue_final_message=continues_reply(messages))
    ensure_room(prompt_tokens, runtime.context_length(model), model)
    return prompt_tokens


def count_tokens(messages: list[dict[str, str]], model: LLMModel, *, continue_final_message: bool = False) -> int:
    """Prompt tokens of ``messages`` rendered with ``model``'s chat template. Raises InvalidInput when the
    template refuses them or does not finish (a broken or hostile template in the model's files)."""
    try:
        return runtime.count_chat_tokens(messages, model, continue_final_message=continue_final_message)
    except InvalidRequestError as exc:
        raise InvalidInput(str(exc)) from exc


def ensure_room(prompt_tokens: int, context: int, model: LLMModel) -> None:
    """Raise ContextTooLong unless ``prompt_tokens`` leave at least MIN_REPLY_TOKENS of ``context``."""
    if prompt_tokens + MIN_REPLY_TOKENS > context:
        raise ContextTooLong(
            _(
                "This conversation is too long for %(model)s: it takes %(tokens)d tokens and the model reads at "
                "most %(context)d, with room for a reply. Shorten your message or start a new conversation."
            )
            % {"model": model.display_name or model.name, "tokens": prompt_tokens, "context": context}
        )


def request_params(
    model: LLMModel, params: dict[str, Any] | None, conversation_params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The model's default sampling parameters, overridden by the conversation's settings, overridden by the
    request's; raises InvalidInput for an unknown key or a value out of range."""
    params = params or {}
    if not isinstance(params, dict):
        raise InvalidInput(_("params must be an object."))
    unknown = sorted(set(params) - set(REQUEST_PARAM_KEYS))
    if unknown:
        raise InvalidInput(
            _("Unknown parameter(s): %(unknown)s. Allowed: %(allowed)s.")
            % {"unknown": ", ".join(unknown), "allowed": ", ".join(REQUEST_PARAM_KEYS)}
        )
    merged = {
        **(model.default_params or {}),
        **(conversation_params or {}),
        **{k: v for k, v in params.items() if v is not None},
    }
    sampling_params(merged)
    return merged


CONVERSATION_PARAM_KEYS = ("temperature", "max_tokens")  # what a chat's settings panel sets
CHAT_TEMPERATURE_MAX = 2


def conversation_params(params: Any) -> dict[str, Any]:
    """A chat's settings as given (null or a missing key: the model's default), checked; raises InvalidInput."""
    if not isinstance(params, dict):
        raise InvalidInput(_("params must be an object."))
    unknown = sorted(set(params) - set(CONVERSATION_PARAM_KEYS))
    if unknown:
        raise InvalidInput(
            _("Unknown setting(s): %(unknown)s. Allowed: %(allowed)s.")
            % {"unknown": ", ".join(unknown), "allowed": ", ".join(CONVERSATION_PARAM_KEYS)}
        )
    kept = {key: value for key, value in params.items() if value is not None}
    for key, value in kept.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(_("%(key)s must be a number.") % {"key": key})
    if "max_tokens" in kept and not isinstance(kept["max_tokens"], int):
        raise InvalidInput(_("max_tokens must be a whole number."))
    if not 0 <= kept.get("temperature", 0) <= CHAT_TEMPERATURE_MAX:  # the settings panel's range, as OpenAI's
        raise InvalidInput(_("temperature must be between 0 and %(max)s.") % {"max": CHAT_TEMPERATURE_MAX})
    sampling_params(kept)
    return kept


def sampling_params(params: dict[str, Any], *, max_tokens_limit: int | None = None) -> SamplingParams:
    """``params`` as the engine's SamplingParams, ``max_tokens`` capped at ``max_tokens_limit`` (the room
    left in the context). Raises InvalidInput for a bad value."""
    try:
        sampling = SamplingParams(**{k: v for k, v in params.items() if k in REQUEST_PARAM_KEYS})
    except (InvalidRequestError, TypeError) as exc:
        raise InvalidInput(str(exc)) from exc
    if max_tokens_limit is not None:
        sampling.max_tokens = min(sampling.max_tokens or max_tokens_limit, max_tokens_limit)
    return sampling


def completion_max_tokens(prompt_tokens: int, context: int, *, asked: int | None, default: dict[str, Any]) -> int:
    """An API completion's token budget: what the request asked for (refused when it does not fit), else the
    model's default capped to the room the prompt leaves. Raises ContextTooLong (in OpenAI's words)."""
    room = context - prompt_tokens
    if asked is not None and prompt_tokens + asked > context:
        raise ContextTooLong(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + asked} tokens ({prompt_tokens} in the messages, {asked} in the completion). "
            "Please reduce the length of the messages or completion."
        )
    if room < 1:
        raise ContextTooLong(
            f"This model's maximum context length is {context} tokens. However, your messages resulted in "
            f"{prompt_tokens} tokens. Please reduce the length of the messages."
        )
    if asked is not None:
        return asked
    return min(default.get("max_tokens") or room, room)
