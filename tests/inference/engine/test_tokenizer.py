"""Tokenizer, chat template, incremental detokenizer and stop strings.

References: Hugging Face transformers' own GGUF tokenizer loader (an independent reading of the same metadata),
the chat-template token ids it produces, and llama.cpp's documented pre-tokenizer rules where the two differ.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import gguf
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from inference.engine.chat_template import CHATML_TEMPLATE
from inference.engine.errors import InvalidRequestError, ModelLoadError
from inference.engine.paths import default_model_path
from inference.engine.tokenizer import IncrementalDetokenizer, StopStringMatcher, Tokenizer, load_tokenizer

FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
# transformers 5.24 apply_chat_template(FRANCE, add_generation_prompt=True) on the default GGUF.
FRANCE_IDS = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2,
    198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 19842, 281, 582, 6330, 30, 2, 198, 1, 520, 9531, 198,
]  # fmt: skip
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# Digits, code, emoji (with ZWJ sequences), CJK, accents, whitespace runs, special tokens.
CORPUS = [
    "Hello world",
    "12345 and 3.14159, 1,000,000 in 2024-01-01T12:00:00Z",
    "def f(x):\n    return x**2  # square\n\n\n",
    "x=[1,2,3];y={'a':1}\tz = f'{x!r}'",
    "emoji 🤗🎉👩‍👩‍👧 ok",
    "中文测试，你好世界。日本語のテキスト 한국어",
    "Café naïve résumé façade Ångström Ünïcödé",
    "  leading\ttabs\t\tand   spaces   ",
    "a\r\nb\rc\n\n\n",
    "I'm sure they'll say it's fine, don't you?",
    "<|im_start|>user\nhi<|im_end|>\n<repo_name>foo<file_sep>",
    "",
]
# Whitespace runs before digits: SmolLM2 splits digits off first (its tokenizer.json and llama.cpp's "smollm"
# rule), so "a  1" is a, "  ", 1. transformers' GGUF loader ignores tokenizer.ggml.pre and gives a, " ", " 1".
SPACES_BEFORE_DIGITS = ["a  1", "x   22  333", "total:\n  42"]


@pytest.fixture(scope="module")
def smollm() -> Tokenizer:
    return load_tokenizer(default_model_path())


@pytest.fixture(scope="module")
def transformers_smollm():
    transformers = pytest.importorskip("transformers")
    path = default_model_path()
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def write_gguf(path: Path, tokens: list[str], **metadata) -> Path:
    """A GGUF file holding only tokenizer metadata (no tensors)."""
    writer = gguf.GGUFWriter(str(path), arch="llama")
    if tokens:
        writer.add_token_list(tokens)
    for key, value in metadata.items():
        getattr(writer, f"add_{key}")(value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def byte_level_gguf(path: Path, pre: str) -> Path:
    """256 byte tokens plus merges that build "1234" digit by digit, and <|end|> as a control token."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*alphabet, "12", "123", "1234", "<|end|>"]
    types = [1] * (len(tokens) - 1) + [3]
    return write_gguf(
        path,
        tokens,
        tokenizer_model="gpt2",
        tokenizer_pre=pre,
        token_types=types,
        token_merges=["1 2", "12 3", "123 4"],
        eos_token_id=len(tokens) - 1,
    )


def sentencepiece_gguf(path: Path) -> Path:
    """A llama-style (SentencePiece) vocabulary: <unk>, <s>, </s>, 256 byte tokens, scored pieces."""
    pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "he", "ll", "llo", "hello", "▁hello", "▁w", "or", "▁wor"]
    pieces += ["▁world", "ld"]
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{byte:02X}>" for byte in range(256)), *pieces]
    return write_gguf(
        path,
        tokens,
        tokenizer_model="llama",
        token_types=[2, 3, 3] + [6] * 256 + [1] * len(pieces),
        token_scores=[0.0] * 259 + [-float(rank) for rank in range(len(pieces))],
        bos_token_id=1,
        eos_token_id=2,
        unk_token_id=0,
        add_bos_token=True,
    )


def hf_folder(path: Path, *, chat_template: str | None) -> Path:
    """A Hugging Face tokenizer folder trained in place: byte-level BPE with ChatML special tokens."""
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(["Hello there, how are you? I am fine. " * 20, *CORPUS], trainer=trainer)
    path.mkdir()
    backend.save(str(path / "tokenizer.json"))
    config = {"bos_token": None, "eos_token": "<|im_end|>"} | (
        {"chat_template": chat_template} if chat_template else {}
    )
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    return path


# --- the default model's GGUF tokenizer ----------------------------------------------------------------


def test_gguf_tokenizer_reads_vocabulary_and_special_ids(smollm):
    assert smollm.vocab_size == 49152
    assert smollm.bos_token_id == 1
    assert smollm.eos_token_ids == [2, 0]  # <|im_end|>, then <|endoftext|> as llama.cpp also stops on it
    assert smollm.encode("<|im_start|>assistant<|im_end|>") == [1, 520, 9531, 2]


@pytest.mark.slow
def test_gguf_encode_matches_transformers_on_varied_corpus(smollm, transformers_smollm):
    expected = [transformers_smollm.encode(text, add_special_tokens=False) for text in CORPUS]

    assert [smollm.encode(text) for text in CORPUS] == expected


@pytest.mark.slow
def test_gguf_splits_digits_before_whitespace_like_smollm2_own_tokenizer(smollm, transformers_smollm):
    # given transformers' GGUF vocabulary with SmolLM2's published pre-tokenizer (digits, then GPT-2 byte-level)
    reference = tokenizers.Tokenizer.from_str(transformers_smollm.backend_tokenizer.to_str())
    reference.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )

    encoded = [smollm.encode(text) for text in SPACES_BEFORE_DIGITS + CORPUS]

    assert encoded == [reference.encode(text, add_special_tokens=False).ids for text in SPACES_BEFORE_DIGITS + CORPUS]
    assert [smollm.id_to_token(i) for i in encoded[0]] == ["a", "ĠĠ", "1"]


def test_gguf_decode_restores_text_without_special_tokens(smollm):
    plain = [text for text in CORPUS if "<|" not in text]

    assert [smollm.decode(smollm.encode(text)) for text in plain] == plain
    assert smollm.decode(smollm.encode("<|im_start|>user\nhi<|im_end|>")) == "user\nhi"


def test_default_chat_template_adds_default_system_prompt(smollm):
    rendered = smollm.apply_chat_template(FRANCE)

    assert rendered == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_capital_of_france_prompt_is_42_tokens_as_in_transformers(smollm):
    assert smollm.encode_chat(FRANCE) == FRANCE_IDS
    assert len(FRANCE_IDS) == 42


def test_own_system_message_replaces_default_one_and_generation_prompt_is_optional(smollm):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]

    rendered = smollm.apply_chat_template(messages, add_generation_prompt=False)

    assert rendered == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


# --- other GGUF tokenizers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pre", "pieces"),
    [
        ("gpt-2", ["1234"]),  # the GPT-2 regex keeps a number whole
        ("llama-bpe", ["123", "4"]),  # Llama 3: numbers in groups of up to three digits
        ("qwen2", ["1", "2", "3", "4"]),  # Qwen2: one digit at a time
        ("smollm", ["1", "2", "3", "4"]),
    ],
)
def test_gguf_pre_tokenizer_follows_tokenizer_ggml_pre(tmp_path, pre, pieces):
    tokenizer = load_tokenizer(byte_level_gguf(tmp_path / "bpe.gguf", pre))

    ids = tokenizer.encode("1234<|end|>")

    assert [tokenizer.id_to_token(i) for i in ids] == [*pieces, "<|end|>"]
    assert tokenizer.decode(ids) == "1234"
    assert tokenizer.eos_token_ids == [ids[-1]]


def test_sentencepiece_gguf_matches_transformers_and_falls_back_to_bytes(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = sentencepiece_gguf(tmp_path / "spm.gguf")
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    texts = ["hello world", "hello  world", "€ hello\nworld", "hellohello"]

    tokenizer = load_tokenizer(path)

    assert [tokenizer.encode(text, add_special_tokens=True) for text in texts] == [reference.encode(t) for t in texts]
    assert tokenizer.encode("€", add_special_tokens=True) == [1, 259, 229, 133, 175]  # <s> ▁ <0xE2> <0x82> <0xAC>
    assert [tokenizer.decode(tokenizer.encode(text)) for text in texts] == texts


def test_sentencepiece_gguf_prefixes_a_space_after_special_tokens_like_llama_cpp(tmp_path):
    tokenizer = load_tokenizer(sentencepiece_gguf(tmp_path / "spm.gguf"))

    ids = tokenizer.encode("</s>hello")

    assert [tokenizer.id_to_token(i) for i in ids] == ["</s>", "▁h", "e", "llo"]


def test_gguf_without_tokenizer_raises_model_load_error(tmp_path):
    path = write_gguf(tmp_path / "empty.gguf", [])

    with pytest.raises(ModelLoadError, match="has no tokenizer"):
        load_tokenizer(path)


def test_gguf_with_unknown_pre_tokenizer_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="'mystery' is not supported"):
        load_tokenizer(byte_level_gguf(tmp_path / "bpe.gguf", "mystery"))


def test_file_that_is_not_gguf_raises_model_load_error(tmp_path):
    path = tmp_path / "model.gguf"
    with default_model_path().open("rb") as model:
        path.write_bytes(model.read(4096))  # cut off inside the tokenizer metadata

    with pytest.raises(ModelLoadError, match="not a readable GGUF file"):
        load_tokenizer(path)


def test_missing_model_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="Model not found"):
        load_tokenizer(tmp_path / "nowhere.gguf")


# --- Hugging Face folders -------------------------------------------------------------------------------


def test_hf_folder_uses_its_chat_template_special_tokens_and_generation_eos(tmp_path):
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}<|im_end|>{% endfor %}"
    tokenizer = load_tokenizer(hf_folder(tmp_path / "hf", chat_template=template))

    ids = tokenizer.encode_chat([{"role": "user", "content": "Hello there"}])

    assert tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}]) == "<|im_start|>user: Hi<|im_end|>"
    assert ids[0] == 1 and ids[-1] == 2  # <|im_start|> ... <|im_end|> as single ids
    assert tokenizer.decode(ids) == "user: Hello there"
    assert tokenizer.eos_token_ids == [2, 0]
    assert tokenizer.bos_token_id is None


def test_hf_folder_matches_transformers_tokenizer(tiny_llama_path):
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(str(tiny_llama_path))
    conversation = [{"role": "system", "content": "Be brief."}, *FRANCE]
    expected_prompt = reference.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    expected_ids = reference.apply_chat_template(conversation, add_generation_prompt=True)["input_ids"]

    tokenizer = load_tokenizer(tiny_llama_path)

    assert [tokenizer.encode(text) for text in CORPUS] == [
        reference.encode(t, add_special_tokens=False) for t in CORPUS
    ]
    assert tokenizer.apply_chat_template(conversation) == expected_prompt
    assert tokenizer.encode_chat(conversation) == expected_ids
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (reference.bos_token_id, reference.eos_token_id)


def test_hf_folder_without_template_falls_back_to_chatml(tmp_path):
    tokenizer = load_tokenizer(hf_folder(tmp_path / "hf", chat_template=None))

    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])

    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_hf_folder_without_tokenizer_json_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"has no tokenizer\.json"):
        load_tokenizer(tmp_path)


# --- chat template rendering ----------------------------------------------------------------------------


def template_tokenizer(tmp_path: Path, template: str) -> Tokenizer:
    return load_tokenizer(hf_folder(tmp_path / "hf", chat_template=template))


def test_template_has_hf_helpers_loop_controls_and_trimmed_blocks(tmp_path):
    template = (
        "{% for m in messages %}\n"
        "  {% if loop.index > 1 %}{% break %}{% endif %}\n"
        "{{ m | tojson }}|{{ strftime_now('%Y') | length }}\n"
        "{% endfor %}"
    )

    rendered = template_tokenizer(tmp_path, template).apply_chat_template(
        [{"role": "user", "content": "héllo"}, {"role": "user", "content": "dropped"}]
    )

    assert rendered == '{"role": "user", "content": "héllo"}|4\n'


def test_template_raise_exception_becomes_invalid_request_error(tmp_path):
    tokenizer = template_tokenizer(tmp_path, "{{ raise_exception('Conversation roles must alternate') }}")

    with pytest.raises(InvalidRequestError, match="Conversation roles must alternate"):
        tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])


def test_template_cannot_reach_python_internals(tmp_path):
    tokenizer = template_tokenizer(tmp_path, "{{ ''.__class__.__mro__[1].__subclasses__() }}")

    with pytest.raises(InvalidRequestError):
        tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])


@pytest.mark.parametrize(
    ("template", "why"),
    [
        # Loops inside loops that would run for hours: stopped at the deadline.
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "did not finish"),
        # One operation that would build a gigabyte, or a number with millions of digits: refused outright.
        ("{{ 'a' * 1000000000 }}", "repeats a value too many times"),
        ("{{ [messages] * 1000000000 }}", "repeats a value too many times"),
        ("{{ 2 ** 100000000 }}", "too high a power"),
        # A macro that calls itself for ever.
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion"),
    ],
)
def test_a_template_that_would_not_finish_is_stopped_with_a_clear_error(tmp_path, template, why):
    tokenizer = template_tokenizer(tmp_path, template)
    tokenizer.chat_template.timeout_s = 0.2

    with pytest.raises(InvalidRequestError, match=why):
        tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])

    # ... and the next conversation renders as usual, with no trace function left behind.
    assert sys.gettrace() is None
    (tmp_path / "ok").mkdir()
    assert template_tokenizer(tmp_path / "ok", CHATML_TEMPLATE).apply_chat_template([{"role": "user", "content": "Hi"}])


def test_template_generation_tag_renders_its_body(tmp_path):
    tokenizer = template_tokenizer(tmp_path, "{% generation %}{{ messages[0]['content'] }}{% endgeneration %}")

    assert tokenizer.apply_chat_template([{"role": "assistant", "content": "ok"}]) == "ok"


def test_template_that_does_not_compile_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not compile"):
        template_tokenizer(tmp_path, "{% for m in messages %}")


def test_malformed_messages_raise_invalid_request_error(smollm):
    with pytest.raises(InvalidRequestError, match="role"):
        smollm.encode_chat([{"content": "no role"}])


# --- incremental detokenizer ----------------------------------------------------------------------------


def stream(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    detokenizer = IncrementalDetokenizer(tokenizer)
    return [detokenizer.push(token_id) for token_id in ids] + [detokenizer.flush()]


def test_incremental_detokenizer_equals_full_decode_on_random_streams(smollm):
    # given random ids from the whole vocabulary, mixed with the tokens of multi-byte text
    rng = random.Random(1234)
    multibyte = smollm.encode("🤗 中文 naïve 👩‍👩‍👧 한국어 €")
    streams = [
        [rng.choice([rng.randrange(smollm.vocab_size), rng.choice(multibyte)]) for _ in range(rng.randrange(1, 60))]
        for _ in range(200)
    ]

    assert ["".join(stream(smollm, ids)) for ids in streams] == [smollm.decode(ids) for ids in streams]


def test_incremental_detokenizer_never_emits_half_a_character(smollm):
    text = "Emoji 🤗🎉 and 中文测试 and 👩‍👩‍👧!"
    ids = smollm.encode(text)
    assert any("\ufffd" in smollm.decode([token_id]) for token_id in ids)  # some tokens hold partial characters

    pieces = stream(smollm, ids)

    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_incremental_detokenizer_leaves_out_special_tokens(smollm):
    pieces = stream(smollm, smollm.encode("Paris.<|im_end|>"))

    assert "".join(pieces) == "Paris."


def test_incremental_detokenizer_keeps_sentencepiece_spaces(tmp_path):
    tokenizer = load_tokenizer(sentencepiece_gguf(tmp_path / "spm.gguf"))
    ids = tokenizer.encode("hello world €  hello", add_special_tokens=True)

    assert "".join(stream(tokenizer, ids)) == "hello world €  hello"


# --- stop strings ---------------------------------------------------------------------------------------


def test_stop_string_split_across_pushes_never_leaks():
    matcher = StopStringMatcher(["STOP"])

    outputs = [matcher.push(text) for text in ["Hello wor", "ld! S", "T", "OP and more"]]

    assert outputs == [("Hello wor", False), ("ld! ", False), ("", False), ("", True)]


def run_stop_matcher(parts: list[str]) -> tuple[str, bool]:
    matcher = StopStringMatcher(["\nUser:", "###"])
    pushed = [matcher.push(part) for part in parts]
    return "".join(emitted for emitted, _ in pushed), pushed[-1][1]


def test_stop_string_cut_at_every_split_point_emits_exactly_the_text_before_it():
    text = "The answer is 42.\nUser: next"
    splits = [[text[:a], text[a:b], text[b:]] for a in range(len(text)) for b in range(a, len(text))]

    results = [run_stop_matcher(parts) for parts in splits]

    assert results == [("The answer is 42.", True)] * len(splits)


def test_held_back_prefix_is_released_when_it_stops_matching_or_at_flush():
    matcher = StopStringMatcher(["STOP"])

    first, second, third = matcher.push("ST"), matcher.push("ay ST"), matcher.flush()

    assert (first, second, third) == (("", False), ("STay ", False), "ST")


def test_earliest_stop_string_wins():
    matcher = StopStringMatcher(["world", "lo"])

    assert matcher.push("hello world") == ("hel", True)
    assert matcher.push("more") == ("", True)


def test_empty_stop_string_is_rejected():
    with pytest.raises(InvalidRequestError):
        StopStringMatcher(["ok", ""])
