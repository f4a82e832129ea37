"""Errors the conversation services raise. Front doors (WebSocket, REST, pages) turn them into a clear
message for the user, keyed by ``code``."""

from __future__ import annotations


class ConversationError(Exception):
    code = "conversation_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(ConversationError):
    """Unknown, or someone else's: the two are indistinguishable on purpose."""

    code = "not_found"


class InvalidInput(ConversationError):
    code = "invalid_input"


class Stale(ConversationError):
    """A message sent to continue a branch whose end has moved since the sender saw it (another tab or device
    added a turn): sending it would silently fork the conversation."""

    code = "conversation_changed"


class ContextTooLong(ConversationError):
    code = "context_length_exceeded"


class NotAllowed(ConversationError):
    """The user may not do this (for example chat before verifying their e-mail address when required)."""

    code = "not_allowed"


class LimitReached(ConversationError):
    """Over one of the plan's limits (accounts.billing.quotas). ``code`` is ``rate_limit_exceeded`` or
    ``insufficient_quota`` (the monthly budget); ``retry_after_s`` is when it may be tried again."""

    code = "rate_limit_exceeded"

    def __init__(self, message: str, code: str | None = None, *, retry_after_s: int, kind: str = "") -> None:
        super().__init__(message, code)
        self.retry_after_s = retry_after_s
        self.kind = kind
