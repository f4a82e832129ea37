"""Chat templates: the model's own Jinja template, rendered the way Hugging Face transformers renders it.

Templates come from model files, so they run in Jinja's immutable sandbox: a template can read the
messages but cannot call into Python beyond the few helpers HF templates rely on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import InvalidRequestError, ModelLoadError

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


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    """A compiled chat template plus the special-token strings HF passes to every render
    (``bos_token``, ``eos_token``, ``unk_token``, ``pad_token``)."""

    def __init__(self, source: str, *, special_tokens: Mapping[str, str] | None = None, origin: str = "model") -> None:
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        try:
            self._template = _environment().from_string(source)
        except jinja2.exceptions.TemplateSyntaxError as exc:
            raise ModelLoadError(f"The chat template of {origin} does not compile: {exc} (line {exc.lineno}).") from exc

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True) -> str:
        """Render a conversation. ``messages`` are dicts with at least a string ``role``.

        Raises InvalidRequestError when the messages are malformed or the template rejects them.
        """
        _check_messages(messages)
        context = {"bos_token": "", "eos_token": "", "unk_token": "", "pad_token": ""} | self.special_tokens
        try:
            # tools/documents are passed as None, like HF, so `tools is not none` tests behave the same.
            return self._template.render(
                messages=list(messages),
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **context,
            )
        except (jinja2.exceptions.TemplateError, TypeError, ValueError) as exc:
            raise InvalidRequestError(f"The chat template could not render these messages: {exc}") from exc


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise InvalidRequestError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts.")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidRequestError(f"messages[{index}] must be a dict with a string 'role'.")
