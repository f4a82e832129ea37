"""Tiny random checkpoints for engine tests, written once per session and never downloaded.

``tiny_llama_path`` is SmolLM2-shaped (tied embeddings, GQA); ``tiny_qwen2_path`` has Qwen2's qkv bias
and untied embeddings. Both are Hugging Face folders (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with a ChatML template) that transformers can load too. ``make_tiny_checkpoint``
builds variants (rope scaling, untied Llama, ...).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

TINY_VOCAB = 512
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid.",
    "Hello! How can I help you today? I am a helpful assistant and I answer in one sentence.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 42 100 2048. Prices like $3.50 and 12% are common.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # code has spaces, tabs\tand newlines",
    "Unicode text: café, naïve, Zürich, 東京, Привет, emoji 🙂 and accents àéîõü.",
    "The quick brown fox jumps over the lazy dog while the five boxing wizards jump quickly.",
    "user: what is the weather like? assistant: it is sunny with a light breeze this afternoon.",
] * 8

BASE_CONFIG: dict[str, Any] = {
    "vocab_size": TINY_VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def train_tokenizer() -> Tokenizer:
    """A byte-level BPE trained on CORPUS: deterministic, with ChatML's special tokens first."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return tokenizer


def write_tiny_checkpoint(folder: Path, arch: str = "llama", seed: int = 0, **overrides: Any) -> Path:
    """Write a random ``arch`` ("llama" or "qwen2") model with transformers, plus its tokenizer files."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    torch.manual_seed(seed)
    # transformers edits the dicts it is given (rope_scaling): hand it a copy.
    model = model_cls(config_cls(**copy.deepcopy({**BASE_CONFIG, **overrides})))
    with torch.no_grad():
        # Random init leaves biases and norms at 0/1; perturb them so a loader that drops them fails tests.
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    train_tokenizer().save(str(folder / "tokenizer.json"))
    tokenizer_config = {
        "chat_template": CHATML_TEMPLATE,
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "add_bos_token": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": BASE_CONFIG["max_position_embeddings"],
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return folder


def write_chat_model(folder: Path, **overrides: Any) -> Path:
    """A tiny random Llama whose output rows for the special tokens are zero, so a greedy reply never ends
    early: with temperature 0 a reply runs to its max_tokens (the live tests' and the fault suite's model)."""
    from safetensors.torch import load_file, save_file

    write_tiny_checkpoint(folder, "llama", tie_word_embeddings=False, **overrides)
    weights_file = folder / "model.safetensors"
    weights = load_file(weights_file)
    weights["lm_head.weight"][: len(SPECIAL_TOKENS)] = 0
    save_file(weights, weights_file, metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="session")
def make_tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_tiny_checkpoint(arch="llama", **config_overrides) -> Path``, each variant written once."""
    made: dict[str, Path] = {}

    def make(arch: str = "llama", **overrides: Any) -> Path:
        key = json.dumps([arch, overrides], sort_keys=True)
        if key not in made:
            made[key] = write_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny-{arch}"), arch, **overrides)
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_llama_path(make_tiny_checkpoint: Callable[..., Path]) -> Path:
    """SmolLM2-shaped: Llama, tied embeddings, 4 heads over 2 KV heads, head_dim 16."""
    return make_tiny_checkpoint("llama", tie_word_embeddings=True)


@pytest.fixture(scope="session")
def tiny_qwen2_path(make_tiny_checkpoint: Callable[..., Path]) -> Path:
    """Qwen2: bias on q/k/v, untied embeddings."""
    return make_tiny_checkpoint("qwen2", tie_word_embeddings=False)
