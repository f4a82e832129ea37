"""Chat templates: the model's own Jinja template, rendered the way Hugging Face transformers renders it.

Templates come from model files, so they run in Jinja's immutable sandbox: a template can read the
messages but cannot call into Python beyond the few helpers HF templates rely on. The sandbox alone does
not stop a template that never finishes (loops inside loops) or builds a huge string in one operation, so
a render runs against a deadline (RENDER_TIMEOUT_S, checked on the template's own lines while it runs) and
repetition and powers are capped.
"""

from __future__ import annotations

import json
import operator
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import FrameType
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .errors import InvalidRequestError, ModelLoadError

# A chat template renders in well under a millisecond; one still running after this long never finishes.
RENDER_TIMEOUT_S = 1.0
MAX_REPEAT_CHARS = 1_000_000  # "x" * n and [x] * n may make at most this many items
MAX_EXPONENT = 1024
_TEMPLATE_FILENAME = "<template>"  # the code Jinja compiles from a string says it comes from here

# Used when a model ships no template: the ChatML layout most instruction-tuned models understand.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks; rendering keeps the body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    # Templates call this to reject a conversation they cannot render (e.g. roles that do not alternate).
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # HF replaces Jinja's HTML-escaping tojson with plain json.dumps, keeping non-ASCII text readable.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with ``*`` and ``**`` capped so one operation cannot build a huge value."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            for sequence, times in ((left, right), (right, left)):
                repeated = isinstance(sequence, (str, list, tuple)) and isinstance(times, int)
                if repeated and len(sequence) * times > MAX_REPEAT_CHARS:
                    raise SecurityError("The chat template repeats a value too many times.")
            return operator.mul(left, right)
        if isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise SecurityError("The chat template raises a number to too high a power.")
        return operator.pow(left, right)


class _TooSlow(Exception):
    pass


def _environment() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    """A compiled chat template plus the special-token strings HF passes to every render
    (``bos_token``, ``eos_token``, ``unk_token``, ``pad_token``)."""

    def __init__(
        self,
        source: str,
        *,
        special_tokens: Mapping[str, str] | None = None,
        origin: str = "model",
        timeout_s: float = RENDER_TIMEOUT_S,
    ) -> None:
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self.timeout_s = timeout_s
        try:
            self._template = _environment().from_string(source)
        except jinja2.exceptions.TemplateSyntaxError as exc:
            raise ModelLoadError(f"The chat template of {origin} does not compile: {exc} (line {exc.lineno}).") from exc

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True) -> str:
        """Render a conversation. ``messages`` are dicts with at least a string ``role``.

        Raises InvalidRequestError when the messages are malformed, the template rejects them, or it takes
        longer than ``timeout_s`` to render.
        """
        _check_messages(messages)
        context = {"bos_token": "", "eos_token": "", "unk_token": "", "pad_token": ""} | self.special_tokens
        try:
            with _deadline(self.timeout_s):
                # tools/documents are passed as None, like HF, so `tools is not none` tests behave the same.
                return self._template.render(
                    messages=list(messages),
                    tools=None,
                    documents=None,
                    add_generation_prompt=add_generation_prompt,
                    **context,
                )
        except _TooSlow:
            raise InvalidRequestError(
                f"The model's chat template did not finish rendering within {self.timeout_s:g} s."
            ) from None
        except (jinja2.exceptions.TemplateError, TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            raise InvalidRequestError(f"The chat template could not render these messages: {exc}") from exc


class _deadline:
    """Raise _TooSlow in the template's code once ``seconds`` have passed: a trace function on this thread,
    active only inside the template's own frames, looks at the clock every 256 lines."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.lines = 0
        self.previous: Any = None

    def __enter__(self) -> None:
        self.previous = sys.gettrace()
        sys.settrace(self._call)

    def __exit__(self, *exc_info: object) -> None:
        sys.settrace(self.previous)

    def _call(self, frame: FrameType, event: str, arg: Any) -> Any:
        return self._line if frame.f_code.co_filename == _TEMPLATE_FILENAME else None

    def _line(self, frame: FrameType, event: str, arg: Any) -> Any:
        self.lines += 1
        if self.lines & 255 == 0 and time.monotonic() > self.deadline:
            raise _TooSlow
        return self._line


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise InvalidRequestError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts.")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidRequestError(f"messages[{index}] must be a dict with a string 'role'.")
