"""The one exception family the engine raises to its callers."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: every error the engine reports to a caller is one of these.

    The message is written for the person who has to act on it (which file, which limit).
    """


class ModelLoadError(EngineError):
    """The model could not be loaded: missing, truncated or corrupt file, unknown architecture,
    unsupported tensor type, missing tokenizer."""


class PromptTooLongError(EngineError):
    """The prompt (plus the tokens asked for) does not fit the model's context."""

    def __init__(self, message: str, *, prompt_tokens: int, max_context: int) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.max_context = max_context


class InvalidRequestError(EngineError):
    """A request parameter is out of range (for example a negative temperature)."""
