"""GGUF files (llama.cpp) through gguf-py: metadata -> ModelConfig, tensors -> Hugging Face names.

Quantized tensors are handed over untouched as ``GGMLWeight`` (linear.py decides how to run them);
float tensors become torch tensors. llama.cpp's converter permutes the rows of Llama's attn_q and
attn_k for interleaved RoPE; they are permuted back here so the model only knows HF's rotate_half.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, ReaderTensor

from .config import ModelConfig, check_arch
from .errors import ModelLoadError
from .linear import GGMLWeight, Weight

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_FLOAT_TYPES = {
    GGMLQuantizationType.F32: torch.float32,
    GGMLQuantizationType.F16: torch.float16,
    GGMLQuantizationType.BF16: torch.bfloat16,
}
# Architectures whose converter permutes q/k for llama.cpp's interleaved RoPE (Qwen2 uses NeoX RoPE as is).
_PERMUTED_QK = ("llama",)

_REQUIRED = object()


def load_gguf(path: Path) -> tuple[ModelConfig, dict[str, Weight]]:
    """Read a .gguf file into (config, weights named as in a Hugging Face Llama checkpoint)."""
    try:
        reader = GGUFReader(path)
        tensors = {t.name: t for t in reader.tensors}
    except (ValueError, IndexError, KeyError, OSError) as exc:
        raise ModelLoadError(
            f"{path} is not a readable GGUF file ({exc}). It may be truncated or corrupt: download it again."
        ) from exc
    config = _config(reader, tensors, path)
    weights: dict[str, Weight] = {}
    for name, tensor in tensors.items():
        hf_name = _hf_name(name)
        if hf_name is None:
            continue
        w = _weight(tensor, path)
        if config.arch in _PERMUTED_QK and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_heads if "q_proj" in hf_name else config.num_kv_heads
            w = _unpermute_qk(w, heads)
        weights[hf_name] = w
    return config, weights


def unpermute_qk_rows(rows: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: per head, rows (hd/2, 2) -> (2, hd/2). Works on dense rows
    and on rows of quantized blocks alike, since blocks run along the input dimension."""
    n = rows.shape[0]
    return np.ascontiguousarray(
        rows.reshape(n_heads, n // n_heads // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)
    )


def _unpermute_qk(w: Weight, n_heads: int) -> Weight:
    if isinstance(w, GGMLWeight):
        return GGMLWeight(unpermute_qk_rows(w.data, n_heads), w.qtype, w.shape)
    return torch.from_numpy(unpermute_qk_rows(w.numpy(), n_heads))


def _hf_name(name: str) -> str | None:
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}"
    return None  # tensors the model does not use (rope_freqs is read into the config)


def _weight(tensor: ReaderTensor, path: Path) -> Weight:
    shape = tuple(int(d) for d in reversed(tensor.shape))  # ggml lists dimensions innermost first
    if tensor.tensor_type in _FLOAT_TYPES:
        # np.array copies out of the read-only memory map; BF16 arrives as raw 16-bit words.
        data = np.array(tensor.data)
        t = (
            torch.from_numpy(data.view(np.int16)).view(torch.bfloat16)
            if data.dtype == np.uint16
            else torch.from_numpy(data)
        )
        return t.to(_FLOAT_TYPES[tensor.tensor_type]).reshape(shape)
    if len(shape) != 2:
        raise ModelLoadError(f"{path}: tensor {tensor.name} is quantized but not a matrix {shape}.")
    return GGMLWeight(tensor.data, tensor.tensor_type, (shape[0], shape[1]))


def _meta(reader: GGUFReader, key: str, default: Any = _REQUIRED) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is _REQUIRED:
            raise ModelLoadError(f"GGUF metadata lacks {key!r}; the file was not written by a llama.cpp converter.")
        return default
    return field.contents()


def _config(reader: GGUFReader, tensors: dict[str, ReaderTensor], path: Path) -> ModelConfig:
    arch = _meta(reader, "general.architecture")
    check_arch(arch)
    p = f"{arch}."
    num_heads = int(_meta(reader, p + "attention.head_count"))
    hidden = int(_meta(reader, p + "embedding_length"))
    head_dim = int(_meta(reader, p + "attention.key_length", _meta(reader, p + "rope.dimension_count", 0)))
    if "token_embd.weight" not in tensors:
        raise ModelLoadError(f"{path} has no token_embd tensor: not a complete language model.")
    vocab = int(_meta(reader, p + "vocab_size", int(tensors["token_embd.weight"].shape[-1])))
    eos = [
        int(_meta(reader, key))
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
        if key in reader.fields
    ]
    bos = _meta(reader, "tokenizer.ggml.bos_token_id", None)
    freqs = tensors.get("rope_freqs.weight")
    return ModelConfig(
        arch=arch,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(_meta(reader, p + "feed_forward_length")),
        num_layers=int(_meta(reader, p + "block_count")),
        num_heads=num_heads,
        num_kv_heads=int(_meta(reader, p + "attention.head_count_kv", num_heads)),
        head_dim=head_dim or hidden // num_heads,
        rope_theta=float(_meta(reader, p + "rope.freq_base", 10000.0)),
        rope_scaling=_rope_scaling(reader, p, path),
        rms_norm_eps=float(_meta(reader, p + "attention.layer_norm_rms_epsilon", 1e-5)),
        tie_word_embeddings="output.weight" not in tensors,
        qkv_bias="blk.0.attn_q.bias" in tensors,
        max_position_embeddings=int(_meta(reader, p + "context_length", 2048)),
        bos_token_id=None if bos is None else int(bos),
        eos_token_ids=list(dict.fromkeys(eos)),
        rope_freq_factors=None if freqs is None else [float(f) for f in np.asarray(freqs.data, dtype=np.float32)],
    )


def _rope_scaling(reader: GGUFReader, p: str, path: Path) -> dict[str, Any] | None:
    """llama.cpp's rope.scaling.* metadata as a Hugging Face dict. Llama 3.x's scaling comes as the
    rope_freqs tensor instead (see ModelConfig.rope_freq_factors)."""
    kind = _meta(reader, p + "rope.scaling.type", "none")
    factor = float(_meta(reader, p + "rope.scaling.factor", 1.0))
    if kind == "none" or factor == 1.0:
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    raise ModelLoadError(f"{path}: rope scaling {kind!r} is not supported (plain, linear and Llama-3 are).")
