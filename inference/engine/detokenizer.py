"""Streaming text out of token ids: incremental detokenization and stop strings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .errors import InvalidRequestError

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Turns a stream of token ids into text deltas whose concatenation equals ``tokenizer.decode(all_ids)``.

    Byte-level tokens can end in the middle of a multi-byte UTF-8 character, which decodes to U+FFFD until
    the rest arrives, so text is only released once it no longer ends in U+FFFD. Each step decodes a short
    window: the last released chunk (``prefix``) plus the unreleased tokens, because decoders such as
    SentencePiece's strip or add spaces depending on what comes first; the window's new text is whatever
    follows the prefix's text. Special tokens decode to nothing.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.token_ids: list[int] = []
        self._prefix_offset = 0  # start of the context window
        self._read_offset = 0  # end of the text already released

    def push(self, token_id: int) -> str:
        """Add one generated token; return the newly completed text (often "", never half a character)."""
        self.token_ids.append(token_id)
        return self._release(final=False)

    def flush(self) -> str:
        """At the end of a sequence: release whatever is held back, undecodable bytes as U+FFFD."""
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        prefix_text = self.tokenizer.decode(self.token_ids[self._prefix_offset : self._read_offset])
        new_text = self.tokenizer.decode(self.token_ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or (new_text.endswith(_REPLACEMENT) and not final):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self.token_ids)
        return new_text[len(prefix_text) :]


class StopStringMatcher:
    """Cuts generated text at the first stop string, holding back any tail that could begin one.

    ``push(text)`` returns ``(text safe to show, stopped)``. Once a stop string is complete, the text before it
    is returned with ``stopped=True`` and everything after is dropped; a stop string split across pushes is
    never shown. Call ``flush()`` when generation ends for another reason, to release the held-back tail.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = list(dict.fromkeys(stops))
        if any(not isinstance(stop, str) or not stop for stop in self.stops):
            raise InvalidRequestError("Stop strings must be non-empty strings.")
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        buffer = self._held + text
        hits = [index for index in (buffer.find(stop) for stop in self.stops) if index >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return buffer[: min(hits)], True
        keep = self._longest_partial_stop(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_partial_stop(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of some stop string."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
