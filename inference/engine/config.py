"""The model's shape and hyper-parameters, whichever file format they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ModelLoadError

# The Llama family as the engine runs it: pre-norm RMSNorm, rotary embeddings, GQA, SwiGLU.
# Qwen2 differs only by a bias on q/k/v.
SUPPORTED_ARCHS = ("llama", "qwen2")

# Rope variants the rope cache knows how to build ("default" is stored as rope_scaling=None).
SUPPORTED_ROPE_TYPES = ("linear", "llama3")


@dataclass
class ModelConfig:
    arch: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # HF style with a "rope_type" key (llama3, linear); None = plain
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    # Per-frequency divisors stored by llama.cpp for Llama 3.x (GGUF tensor rope_freqs) instead of
    # rope_scaling metadata; None when the file has none.
    rope_freq_factors: list[float] | None = None

    def __post_init__(self) -> None:
        check_config(self)


def check_arch(arch: str) -> None:
    if arch not in SUPPORTED_ARCHS:
        raise ModelLoadError(
            f"Unsupported model architecture {arch!r}: Djinn runs {', '.join(SUPPORTED_ARCHS)} "
            "family models (SmolLM2, Llama 3.x, Qwen2.5)."
        )


def check_config(config: ModelConfig) -> None:
    """Refuse a configuration the engine cannot run, with a message that names what is wrong."""
    check_arch(config.arch)
    if config.num_heads % config.num_kv_heads:
        raise ModelLoadError(
            f"num_heads ({config.num_heads}) is not a multiple of num_kv_heads ({config.num_kv_heads})."
        )
    if config.head_dim % 2:
        raise ModelLoadError(f"head_dim must be even for rotary embeddings, got {config.head_dim}.")
    if config.rope_scaling is not None and config.rope_scaling.get("rope_type") not in SUPPORTED_ROPE_TYPES:
        raise ModelLoadError(
            f"Unsupported rope scaling {config.rope_scaling!r}: supported are plain RoPE and "
            f"{', '.join(SUPPORTED_ROPE_TYPES)}."
        )


def normalize_rope_scaling(scaling: dict[str, Any] | None) -> dict[str, Any] | None:
    """Bring Hugging Face's rope_scaling / rope_parameters to {"rope_type": ..., ...} or None for plain RoPE."""
    if not scaling:
        return None
    out = {k: v for k, v in scaling.items() if k not in ("rope_theta", "type")}
    out["rope_type"] = scaling.get("rope_type", scaling.get("type", "default"))
    if out["rope_type"] == "default":
        return None
    return out


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """Build a ModelConfig from a Hugging Face config.json (transformers 4.x or 5.x layout)."""
    arch = hf.get("model_type", "")
    check_arch(arch)
    try:
        num_heads = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        # transformers 5 folds rope_theta and rope_scaling into rope_parameters.
        rope = hf.get("rope_parameters") or hf.get("rope_scaling")
        theta = float((hf.get("rope_parameters") or {}).get("rope_theta", hf.get("rope_theta", 10000.0)))
        eos = hf.get("eos_token_id")
        return ModelConfig(
            arch=arch,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
            head_dim=int(hf.get("head_dim") or hidden // num_heads),
            rope_theta=theta,
            rope_scaling=normalize_rope_scaling(rope),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=arch == "qwen2" or bool(hf.get("attention_bias", False)),
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=[] if eos is None else [eos] if isinstance(eos, int) else list(eos),
        )
    except KeyError as exc:
        raise ModelLoadError(f"config.json lacks {exc.args[0]!r}, which a {arch or 'Llama'} model needs.") from exc
