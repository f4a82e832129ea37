"""GGUF loading: tiny models written with gguf-py the way llama.cpp's converter writes them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from inference.engine import linear
from inference.engine.batch import Batch
from inference.engine.errors import ModelLoadError
from inference.engine.gguf_loader import load_gguf
from inference.engine.linear import GGMLWeight, dequantize
from inference.engine.paths import default_model_path
from inference.engine.runner import ModelRunner

GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
PROMPT = [1, 67, 309, 324, 277, 201, 45, 88, 120, 7, 300, 2, 9, 410]


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py's LlamaModel.permute, copied as is."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf_name: str) -> str:
    if hf_name in GGUF_NAMES:
        return GGUF_NAMES[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{GGUF_NAMES[rest]}"


def is_matrix_to_quantize(hf_name: str) -> bool:
    return hf_name.endswith("proj.weight") or hf_name in ("model.embed_tokens.weight", "lm_head.weight")


def llama3_rope_factors(config: dict) -> np.ndarray:
    """The rope_freqs tensor llama.cpp's converter writes for Llama 3.x (LlamaModel.generate_extra_tensors)."""
    rope = config["rope_parameters"]
    base, dim = rope["rope_theta"], config["head_dim"]
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old_context_len = rope["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_context_len / low, old_context_len / high
    rope_factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            rope_factors.append(1)
        elif wavelen > low_freq_wavelen:
            rope_factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low) / (high - low)
            rope_factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(rope_factors, dtype=np.float32)


def write_rope_scaling(writer: gguf.GGUFWriter, config: dict) -> None:
    """As the converter does: Llama 3 as a rope_freqs tensor, linear scaling as metadata."""
    rope_type = config["rope_parameters"].get("rope_type", "default")
    if rope_type == "llama3":
        writer.add_tensor("rope_freqs.weight", llama3_rope_factors(config))
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(config["rope_parameters"]["factor"])


def write_gguf(hf_folder: Path, out: Path, qtype: Q, *, arch: str | None = None) -> Path:
    """Convert a tiny HF checkpoint as llama.cpp does: q/k permuted for Llama, matrices in ``qtype``, norms F32."""
    config = json.loads((hf_folder / "config.json").read_text())
    arch = arch or config["model_type"]
    writer = gguf.GGUFWriter(out, arch)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    write_rope_scaling(writer, config)
    for name, tensor in load_file(hf_folder / "model.safetensors").items():
        w = tensor.float().numpy()
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config["num_attention_heads"] if "q_proj" in name else config["num_key_value_heads"]
            w = llama_cpp_permute(w, heads)
        if is_matrix_to_quantize(name) and qtype != Q.F32:
            writer.add_tensor(gguf_name(name), gguf_quantize(w, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_name(name), w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def hf_logits(hf_folder: Path, tokens: list[int], round_trip: Q = Q.F32) -> torch.Tensor:
    """(T, V) logits of transformers, with its matrices first rounded through ``round_trip`` like the GGUF."""
    model = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32)
    state = model.state_dict()
    with torch.no_grad():
        for name, w in state.items():
            if round_trip != Q.F32 and is_matrix_to_quantize(name):
                w.copy_(torch.from_numpy(gguf_dequantize(gguf_quantize(w.numpy(), round_trip), round_trip)))
        return model(torch.tensor([tokens])).logits[0]


def prefill_and_decode(runner: ModelRunner, tokens: list[int]) -> torch.Tensor:
    """Logits (2, V) of a prefill of tokens[:-1] and a decode of tokens[-1], blocks 0.. in order."""
    n, bs = len(tokens), runner.block_size
    table = list(range((n + bs - 1) // bs))
    prefill = runner.execute(Batch(tokens[:-1], list(range(n - 1)), [n - 1], [n - 1], [table], list(range(n - 1))))
    decode = runner.execute(Batch(tokens[-1:], [n - 1], [1], [n], [table], [n - 1]))
    return torch.cat([prefill, decode])


def gguf_py_matrix_in_hf_row_order(tensor: gguf.ReaderTensor, permuted_heads: int) -> torch.Tensor:
    """gguf-py's own dequantization, with llama.cpp's q/k row permutation (if any) inverted by index."""
    out = np.array(gguf_dequantize(tensor.data, tensor.tensor_type)).reshape(int(tensor.shape[1]), int(tensor.shape[0]))
    if permuted_heads:
        rows = llama_cpp_permute(np.arange(out.shape[0]), permuted_heads)  # gguf row i holds HF row rows[i]
        out[rows] = out.copy()
    return torch.from_numpy(out)


@pytest.mark.parametrize("qtype", [Q.F32, Q.Q8_0, Q.Q4_0, Q.Q4_1], ids=lambda q: q.name)
@pytest.mark.parametrize(
    ("name", "permuted_heads"),
    [("self_attn.q_proj.weight", 4), ("self_attn.k_proj.weight", 2), ("mlp.down_proj.weight", 0)],
    ids=["q", "k", "down"],
)
def test_loaded_weights_equal_gguf_py_dequantize_in_hf_row_order(
    tiny_llama_path: Path, tmp_path: Path, qtype: Q, name: str, permuted_heads: int
) -> None:
    # given a converted tiny Llama (4 heads, 2 KV heads), read back independently with gguf-py
    path = write_gguf(tiny_llama_path, tmp_path / "m.gguf", qtype)
    hf_name = f"model.layers.1.{name}"
    tensor = next(t for t in gguf.GGUFReader(path).tensors if t.name == gguf_name(hf_name))
    # when
    _, weights = load_gguf(path)
    # then
    expected = gguf_py_matrix_in_hf_row_order(tensor, permuted_heads)
    torch.testing.assert_close(dequantize(weights[hf_name], torch.float32), expected, atol=0, rtol=0)


def test_f32_gguf_q_and_k_are_exactly_the_hf_weights(tiny_llama_path: Path, tmp_path: Path) -> None:
    # given an F32 conversion (permuted by the converter)
    path = write_gguf(tiny_llama_path, tmp_path / "m.gguf", Q.F32)
    hf = load_file(tiny_llama_path / "model.safetensors")
    # when
    _, weights = load_gguf(path)
    # then
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"):
        torch.testing.assert_close(weights[name], hf[name], atol=0, rtol=0)


LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}


@pytest.mark.parametrize(
    ("arch", "overrides"),
    [
        ("llama", {"tie_word_embeddings": True}),
        ("llama", {"tie_word_embeddings": False}),
        ("qwen2", {"tie_word_embeddings": False}),
        ("llama", {"rope_scaling": {**LLAMA3_ROPE, "original_max_position_embeddings": 16}, "rope_theta": 5e5}),
        ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 4.0}}),
    ],
    ids=["llama-tied", "llama-untied", "qwen2-bias", "llama3-rope-freqs", "linear-rope-scaling"],
)
def test_f32_gguf_gives_the_logits_of_transformers(
    make_tiny_checkpoint: Callable[..., Path], tmp_path: Path, arch: str, overrides: dict
) -> None:
    # given a float32 conversion of a tiny checkpoint
    folder = make_tiny_checkpoint(arch, **overrides)
    path = write_gguf(folder, tmp_path / "m.gguf", Q.F32)
    # when
    runner = ModelRunner.load(path, num_kv_blocks=16, dtype=torch.float32)
    logits = prefill_and_decode(runner, PROMPT)
    # then
    assert runner.config.tie_word_embeddings == overrides.get("tie_word_embeddings", False)
    torch.testing.assert_close(logits, hf_logits(folder, PROMPT)[-2:], atol=2e-4, rtol=0)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1], ids=lambda q: q.name)
def test_quantized_gguf_runs_as_int4_and_matches_transformers_with_the_same_rounding(
    tiny_llama_path: Path, tmp_path: Path, qtype: Q
) -> None:
    # given a quantized conversion, embedding (tied head) included
    path = write_gguf(tiny_llama_path, tmp_path / "m.gguf", qtype)
    # when run with float32 activations (the int4 kernel takes those too)
    runner = ModelRunner.load(path, num_kv_blocks=16, dtype=torch.float32)
    logits = prefill_and_decode(runner, PROMPT)
    # then every matrix runs packed, and logits are those of transformers with the same rounded weights
    layer = runner.model.layers[0]
    assert all(m.uses_int4 for m in (layer.qkv, layer.o, layer.gate_up, layer.down, runner.model.lm_head))
    torch.testing.assert_close(logits, hf_logits(tiny_llama_path, PROMPT, qtype)[-2:], atol=2e-4, rtol=0)


@pytest.mark.parametrize("native_bf16", [True, False], ids=["oneDNN-bf16-dense", "float32-dense"])
def test_q4_1_gguf_in_bf16_stays_close_to_float32(
    tiny_llama_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native_bf16: bool
) -> None:
    # given the production setting: Q4_1 packed as int4, bf16 activations, and the dense copy for the
    # 13-token prefill either packed bf16 (CPUs with native bf16 matmuls) or float32 (AVX2-only CPUs)
    if native_bf16 and not linear.NATIVE_BF16_MATMUL:
        pytest.skip("this CPU has no native bf16 matmuls (oneDNN), so that dense path cannot run here")
    monkeypatch.setattr(linear, "NATIVE_BF16_MATMUL", native_bf16)
    path = write_gguf(tiny_llama_path, tmp_path / "m.gguf", Q.Q4_1)
    # when
    runner = ModelRunner.load(path, num_kv_blocks=16)
    logits = prefill_and_decode(runner, PROMPT)
    # then
    dense = runner.model.layers[0].qkv.dense
    assert dense.dtype == (torch.bfloat16 if native_bf16 else torch.float32)
    torch.testing.assert_close(logits, hf_logits(tiny_llama_path, PROMPT, Q.Q4_1)[-2:], atol=0.05, rtol=0.02)


@pytest.mark.parametrize(
    ("qtype", "scale_offset"), [(Q.Q4_K, 0), (Q.Q5_K, 0), (Q.Q6_K, 208)], ids=["Q4_K", "Q5_K", "Q6_K"]
)
def test_k_quant_weights_dequantize_as_gguf_py_does(qtype: Q, scale_offset: int) -> None:
    # given random K-quant blocks (gguf-py cannot quantize to them) whose fp16 super-block scales are small
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = np.random.default_rng(0).integers(0, 256, size=(32, 2, block_bytes), dtype=np.uint8)
    scales = np.array([0.01, 0.002], dtype=np.float16).view(np.uint8)  # d, then dmin where the type has one
    blocks[..., scale_offset : scale_offset + 4] = scales[: block_bytes - scale_offset]
    raw = blocks.reshape(32, -1)
    # when
    ours = dequantize(GGMLWeight(raw, qtype, (32, 2 * block_elems)), torch.float32)
    # then
    torch.testing.assert_close(ours, torch.from_numpy(gguf_dequantize(raw, qtype)), atol=0, rtol=0)


def test_truncated_gguf_raises_model_load_error(tiny_llama_path: Path, tmp_path: Path) -> None:
    # given a file cut in the middle of its tensor data
    path = write_gguf(tiny_llama_path, tmp_path / "m.gguf", Q.Q4_1)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    # then
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        ModelRunner.load(path)


def test_a_file_that_is_not_gguf_raises_model_load_error(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"not a gguf file at all" * 100)
    with pytest.raises(ModelLoadError, match="not a readable GGUF file"):
        ModelRunner.load(path)


def test_unknown_gguf_architecture_raises_model_load_error(tiny_llama_path: Path, tmp_path: Path) -> None:
    # given a file that says it is a Mamba model
    path = write_gguf(tiny_llama_path, tmp_path / "m.gguf", Q.F32, arch="mamba")
    # then
    with pytest.raises(ModelLoadError, match="Unsupported model architecture 'mamba'"):
        ModelRunner.load(path)


@pytest.mark.slow
def test_default_model_loads_with_its_config_and_runs_q4_1_as_int4() -> None:
    # when
    runner = ModelRunner.load(default_model_path(), num_kv_blocks=64)
    # then
    c = runner.config
    assert (c.arch, c.num_layers, c.hidden_size, c.intermediate_size) == ("llama", 30, 576, 1536)
    assert (c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size) == (9, 3, 64, 49152)
    assert (c.rope_theta, c.max_position_embeddings, c.tie_word_embeddings) == (100000.0, 8192, True)
    assert (c.bos_token_id, c.eos_token_ids) == (1, [2])
    assert c.rms_norm_eps == pytest.approx(1e-5)
    assert all(
        linear.uses_int4 for layer in runner.model.layers for linear in (layer.qkv, layer.o, layer.gate_up, layer.down)
    )
