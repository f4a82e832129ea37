"""Tokenizers for the engine, built on the ``tokenizers`` library from GGUF metadata or a Hugging Face folder.

A GGUF file carries its vocabulary as metadata (``tokenizer.ggml.*``); we rebuild the same tokenizer
llama.cpp would run: a byte-level BPE (``gpt2``) with the pre-tokenizer named by ``tokenizer.ggml.pre``,
or a SentencePiece-style BPE with byte fallback (``llama``). Control tokens become special added tokens,
so ``<|im_start|>`` in a rendered chat template encodes to its single id and is skipped when decoding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers
from gguf import GGUFReader
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

from .chat_template import CHATML_TEMPLATE, ChatTemplate
from .detokenizer import IncrementalDetokenizer, StopStringMatcher
from .errors import ModelLoadError

__all__ = ["IncrementalDetokenizer", "StopStringMatcher", "Tokenizer", "load_tokenizer", "tokenizer_from_gguf"]


class Tokenizer:
    """Text <-> token ids, plus the model's chat template and its end-of-generation tokens."""

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token_id: int | None,
        eos_token_ids: Sequence[int],
        chat_template: str | None,
        origin: str,
    ) -> None:
        self.backend = backend
        self.bos_token_id = bos_token_id
        self.eos_token_ids = list(dict.fromkeys(eos_token_ids))  # first one is the model's own eos
        self.origin = origin
        self.has_chat_template = chat_template is not None
        special = {"bos_token": self.id_to_token(bos_token_id), "eos_token": self.id_to_token(self.eos_token_id)}
        self.chat_template = ChatTemplate(chat_template or CHATML_TEMPLATE, special_tokens=special, origin=origin)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def eos_token_id(self) -> int | None:
        return self.eos_token_ids[0] if self.eos_token_ids else None

    def id_to_token(self, token_id: int | None) -> str:
        """The vocabulary entry for an id ("" for None or an unknown id)."""
        return (self.backend.id_to_token(token_id) or "") if token_id is not None else ""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Special-token text such as ``<|im_end|>`` always encodes to its id; ``add_special_tokens`` adds
        what the model adds around a text on its own (a BOS for Llama-style models)."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids; special tokens are left out."""
        return self.backend.decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    def encode_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        *,
        continue_final_message: bool = False,
    ) -> list[int]:
        """``continue_final_message``: the last message is an assistant reply cut short, to be written on: the
        chat before it with the generation prompt, then its text, left open (no end-of-turn), as HF's option
        of that name does."""
        # The template writes BOS itself where the model wants one, so nothing more is added (as in HF).
        if continue_final_message:
            *history, last = messages
            return self.encode(self.apply_chat_template(history, add_generation_prompt=True) + str(last["content"]))
        return self.encode(self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt))


def load_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer of a model: a ``.gguf`` file or a Hugging Face folder with ``tokenizer.json``."""
    path = Path(path)
    if path.is_dir():
        return _from_hf_folder(path)
    if path.is_file():
        try:
            reader = GGUFReader(path)
        except (ValueError, OSError) as exc:
            raise ModelLoadError(f"{path} is not a readable GGUF file: {exc}") from exc
        return tokenizer_from_gguf(reader, origin=str(path))
    raise ModelLoadError(f"Model not found: {path} (give a .gguf file or a Hugging Face checkpoint folder).")


# --- GGUF ----------------------------------------------------------------------------------------------

# GGUF token types (llama.cpp's llama_token_type).
_CONTROL, _USER_DEFINED = 3, 4

# Regexes from the models' own tokenizer.json files (llama.cpp carries the same ones).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2 is Llama 3's pattern with one digit at a time.
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
# tokenizer.ggml.pre values, grouped by the pre-tokenizer llama.cpp runs for them.
_PRE_GPT2 = {"gpt-2", "gpt2", "default", "mpt", "olmo", "jais"}
_PRE_DIGITS_GPT2 = {"smollm", "starcoder", "refact", "codeshell", "command-r", "exaone"}
_PRE_LLAMA3 = {"llama-bpe", "llama3", "smaug-bpe", "dbrx", "falcon3"}
_PRE_QWEN2 = {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"}
# Control tokens that end a turn in common chat formats: llama.cpp and the models' HF generation configs stop
# on these as well as on the declared eos (e.g. Llama 3.1 on <|eot_id|> and <|eom_id|>).
_END_OF_GENERATION = {"<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|end|>"}


def tokenizer_from_gguf(reader: GGUFReader, *, origin: str = "GGUF file") -> Tokenizer:
    """Build the tokenizer from an open GGUF file's ``tokenizer.*`` metadata (a reader can be shared with
    the weight loader, since opening one costs a couple of seconds)."""
    meta = {name: field for name, field in reader.fields.items() if name.startswith("tokenizer.")}

    def get(key: str, default: Any = None) -> Any:
        field = meta.get(f"tokenizer.ggml.{key}", meta.get(f"tokenizer.{key}"))
        return field.contents() if field is not None else default

    kind = get("model")
    tokens = get("tokens")
    if kind is None or not tokens:
        raise ModelLoadError(f"{origin} has no tokenizer (tokenizer.ggml.model / tokenizer.ggml.tokens are missing).")
    token_types = get("token_type") or [1] * len(tokens)
    if kind == "gpt2":
        backend = _byte_level_bpe(tokens, get("merges") or [], str(get("pre", "default")), origin)
    elif kind == "llama":
        backend = _sentencepiece_bpe(
            tokens, get("scores"), token_types, get("unknown_token_id"), get("add_space_prefix")
        )
    else:
        raise ModelLoadError(
            f"{origin}: tokenizer.ggml.model = {kind!r} is not supported (supported: 'gpt2' byte-level BPE, "
            "'llama' SentencePiece)."
        )
    backend.add_tokens(
        [
            AddedToken(token, special=token_type == _CONTROL, normalized=False)
            for token, token_type in zip(tokens, token_types, strict=True)
            if token_type in (_CONTROL, _USER_DEFINED)
        ]
    )
    bos, eos, eot, eom = (
        _token_id(get(f"{name}_token_id"), tokens, name, origin) for name in ("bos", "eos", "eot", "eom")
    )
    add_bos = get("add_bos_token", kind == "llama")  # llama.cpp's default when the flag is absent
    _add_bos_eos(backend, tokens, bos=bos if add_bos else None, eos=eos if get("add_eos_token") else None)
    turn_ends = [
        index
        for index, (token, token_type) in enumerate(zip(tokens, token_types, strict=True))
        if token_type == _CONTROL and token in _END_OF_GENERATION
    ]
    return Tokenizer(
        backend,
        bos_token_id=bos,
        eos_token_ids=[i for i in (eos, eot, eom, *turn_ends) if i is not None],
        chat_template=get("chat_template"),
        origin=origin,
    )


def _byte_level_bpe(tokens: list[str], merges: list[str], pre: str, origin: str) -> tokenizers.Tokenizer:
    if pre in _PRE_GPT2:
        pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif pre in _PRE_DIGITS_GPT2:
        # Every digit on its own first, then the GPT-2 regex inside each piece.
        pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    elif pre in _PRE_LLAMA3 | _PRE_QWEN2:
        pattern = _LLAMA3_SPLIT if pre in _PRE_LLAMA3 else _QWEN2_SPLIT
        pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        supported = ", ".join(sorted(_PRE_GPT2 | _PRE_DIGITS_GPT2 | _PRE_LLAMA3 | _PRE_QWEN2))
        raise ModelLoadError(f"{origin}: pre-tokenizer tokenizer.ggml.pre = {pre!r} is not supported ({supported}).")
    # Llama 3 looks a whole word up in the vocabulary before merging (its tokenizer.json sets ignore_merges).
    model = models.BPE(
        vocab={token: index for index, token in enumerate(tokens)},
        merges=[tuple(merge.split(" ", 1)) for merge in merges],
        ignore_merges=pre in _PRE_LLAMA3,
    )
    backend = tokenizers.Tokenizer(model)
    if pre in _PRE_QWEN2:
        backend.normalizer = normalizers.NFC()  # as in Qwen2's tokenizer.json
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_bpe(
    tokens: list[str],
    scores: list[float] | None,
    token_types: list[int],
    unk_id: int | None,
    add_space_prefix: bool | None,
) -> tokenizers.Tokenizer:
    """llama.cpp's SentencePiece tokenizer: repeatedly join the adjacent pair whose union is the best-scored
    vocabulary entry, falling back to <0xXX> byte tokens. That is BPE with merges ranked by score."""
    if scores is None:
        scores = [0.0] * len(tokens)
    vocab = {token: index for index, token in enumerate(tokens)}
    ranked: list[tuple[float, int, int, str, str]] = []
    for piece, score, token_type in zip(tokens, scores, token_types, strict=True):
        if token_type != 1:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-score, vocab[left], vocab[right], left, right))
    ranked.sort()
    unk = tokens[unk_id] if unk_id is not None else None
    model = models.BPE(
        vocab=vocab,
        merges=[(left, right) for *_, left, right in ranked],
        unk_token=unk,
        fuse_unk=True,
        byte_fallback=True,
    )
    backend = tokenizers.Tokenizer(model)
    space_prefix = add_space_prefix is None or add_space_prefix  # llama.cpp's default for SentencePiece
    replace = normalizers.Replace(" ", "▁")
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), replace]) if space_prefix else replace
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    backend.decoder = decoders.Sequence([*steps, decoders.Strip(" ", 1, 0)] if space_prefix else steps)
    return backend


def _token_id(value: Any, tokens: list[str], name: str, origin: str) -> int | None:
    if value is None:
        return None
    if not 0 <= int(value) < len(tokens):
        raise ModelLoadError(f"{origin}: tokenizer.ggml.{name}_token_id = {value} is outside the vocabulary.")
    return int(value)


def _add_bos_eos(backend: tokenizers.Tokenizer, tokens: list[str], *, bos: int | None, eos: int | None) -> None:
    """What ``encode(..., add_special_tokens=True)`` wraps around a text."""
    if bos is None and eos is None:
        return
    head = [(tokens[bos], bos)] if bos is not None else []
    tail = [(tokens[eos], eos)] if eos is not None else []
    single = [token for token, _ in head] + ["$A"] + [token for token, _ in tail]
    backend.post_processor = processors.TemplateProcessing(single=" ".join(single), special_tokens=head + tail)


# --- Hugging Face folder -------------------------------------------------------------------------------


def _from_hf_folder(folder: Path) -> Tokenizer:
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ModelLoadError(f"{folder} has no tokenizer.json (only fast-tokenizer checkpoints are supported).")
    try:
        backend = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # the Rust binding raises a bare Exception for any parse error
        raise ModelLoadError(f"{tokenizer_file} could not be read: {exc}") from exc
    config = _read_json(folder / "tokenizer_config.json")
    generation = _read_json(folder / "generation_config.json")
    model_config = _read_json(folder / "config.json")

    def token_id(entry: Any) -> int | None:
        content = entry.get("content") if isinstance(entry, dict) else entry
        return backend.token_to_id(content) if isinstance(content, str) else None

    bos = token_id(config.get("bos_token"))
    if bos is None:
        bos = model_config.get("bos_token_id")
    eos: list[Any] = [token_id(config.get("eos_token"))]
    for source in (generation, model_config):
        value = source.get("eos_token_id")
        eos += value if isinstance(value, list) else [value]
    return Tokenizer(
        backend,
        bos_token_id=bos,
        eos_token_ids=[int(i) for i in eos if i is not None],
        chat_template=_hf_chat_template(folder, config),
        origin=str(folder),
    )


def _hf_chat_template(folder: Path, config: dict[str, Any]) -> str | None:
    """Newer checkpoints keep the template in chat_template.jinja (or .json), older ones in tokenizer_config."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = _read_json(folder / "chat_template.json").get("chat_template", config.get("chat_template"))
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} could not be read: {exc}") from exc
    return data if isinstance(data, dict) else {}
