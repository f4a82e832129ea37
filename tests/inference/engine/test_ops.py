"""The CPU ops (the PyTorch references) against plain dense math written out independently here."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference.engine import ops
from inference.engine.errors import ModelLoadError


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """q (n, H, hd) for the last n of S positions, k, v (S, KVH, hd): causal softmax attention in float64."""
    n, H, _ = q.shape
    S, KVH, _ = k.shape
    k = k.double().repeat_interleave(H // KVH, dim=1)  # (S, H, hd): head h reads kv head h // G
    v = v.double().repeat_interleave(H // KVH, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k) * scale  # (H, n, S)
    query_pos = torch.arange(S - n, S).unsqueeze(1)  # (n, 1)
    scores = scores.masked_fill(torch.arange(S).unsqueeze(0) > query_pos, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)  # (n, H, hd)


def _page(
    seqs_k: list[torch.Tensor], seqs_v: list[torch.Tensor], block_size: int, num_blocks: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Store each sequence's K/V with ops.store_kv into randomly chosen blocks; tables padded with -1."""
    KVH, hd = seqs_k[0].shape[1:]
    k_cache = torch.randn(num_blocks, block_size, KVH, hd, dtype=seqs_k[0].dtype) * 10
    v_cache = torch.randn_like(k_cache) * 10
    free = torch.randperm(num_blocks).tolist()
    n_blocks = [math.ceil(len(k) / block_size) for k in seqs_k]
    tables = torch.full((len(seqs_k), max(n_blocks) + 1), -1, dtype=torch.int32)
    for i, (k, v, n) in enumerate(zip(seqs_k, seqs_v, n_blocks, strict=True)):
        blocks = torch.tensor([free.pop() for _ in range(n)])
        tables[i, :n] = blocks.to(torch.int32)
        positions = torch.arange(len(k))
        ops.store_kv(k, v, k_cache, v_cache, blocks[positions // block_size] * block_size + positions % block_size)
    return k_cache, v_cache, tables


def test_rms_norm_scales_each_row_by_its_root_mean_square() -> None:
    x = torch.randn(3, 576)
    weight = torch.randn(576)

    out, residual = ops.rms_norm(x, weight, 1e-5)

    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight
    torch.testing.assert_close(out, expected)
    assert residual is x


def test_rms_norm_with_residual_normalises_the_sum_and_returns_it() -> None:
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    residual = torch.randn(2, 64, dtype=torch.bfloat16)
    weight = torch.randn(64, dtype=torch.bfloat16)

    out, new_residual = ops.rms_norm(x, weight, 1e-6, residual)

    total = x.float() + residual.float()
    expected = total / torch.sqrt(total.pow(2).mean(-1, keepdim=True) + 1e-6) * weight.float()
    torch.testing.assert_close(new_residual, x + residual)
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=2e-2)


def test_rope_cache_holds_cos_then_sin_of_position_times_frequency() -> None:
    cos_sin = ops.build_rope_cache(8, 16, 10000.0, None, "cpu")

    inv_freq = torch.tensor([10000.0 ** (-2 * i / 8) for i in range(4)], dtype=torch.float64)
    angles = torch.arange(16, dtype=torch.float64).unsqueeze(1) * inv_freq
    assert cos_sin.shape == (16, 8) and cos_sin.dtype == torch.float32
    torch.testing.assert_close(cos_sin, torch.cat((angles.cos(), angles.sin()), -1).float())


def test_rope_cache_applies_llama3_scaling_like_transformers() -> None:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import _compute_llama3_parameters

    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    config = LlamaConfig(
        hidden_size=256,
        num_attention_heads=4,
        head_dim=64,
        rope_theta=500000.0,
        rope_scaling=dict(scaling),
        max_position_embeddings=16384,
    )

    cos_sin = ops.build_rope_cache(64, 4096, 500000.0, scaling, "cpu")

    inv_freq, _ = _compute_llama3_parameters(config)
    angles = torch.arange(4096, dtype=torch.float64).unsqueeze(1) * inv_freq.double()
    torch.testing.assert_close(cos_sin, torch.cat((angles.cos(), angles.sin()), -1).float(), atol=2e-4, rtol=0)


def test_rope_cache_rejects_an_unknown_scaling_type() -> None:
    with pytest.raises(ModelLoadError, match="yarn"):
        ops.build_rope_cache(64, 128, 10000.0, {"rope_type": "yarn", "factor": 4.0}, "cpu")


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
def test_rope_rotates_each_half_pair_by_its_position_angle(dtype: torch.dtype, tol: float) -> None:
    T, H, KVH, hd = 4, 9, 3, 64
    cos_sin = ops.build_rope_cache(hd, 512, 100000.0, None, "cpu")
    q = torch.randn(T, H, hd, dtype=dtype)
    k = torch.randn(T, KVH, hd, dtype=dtype)
    positions = torch.tensor([0, 1, 200, 511])

    q_out, k_out = ops.apply_rope(q, k, positions, cos_sin)

    # Dimension i pairs with i + hd/2 as the real and imaginary parts of one complex number.
    angles = positions.double().unsqueeze(1) * 100000.0 ** (-torch.arange(0, hd, 2).double() / hd)  # (T, hd/2)
    rotation = torch.polar(torch.ones_like(angles), angles).unsqueeze(1)  # (T, 1, hd/2)

    def rotated(x: torch.Tensor) -> torch.Tensor:
        z = torch.complex(x[..., : hd // 2].double(), x[..., hd // 2 :].double()) * rotation
        return torch.cat((z.real, z.imag), -1)

    torch.testing.assert_close(q_out.double(), rotated(q), atol=tol, rtol=tol)
    torch.testing.assert_close(k_out.double(), rotated(k), atol=tol, rtol=tol)


def test_silu_and_mul_gates_the_second_half_with_silu_of_the_first() -> None:
    x = torch.randn(5, 2 * 1536)

    out = ops.silu_and_mul(x)

    gate, up = x[:, :1536], x[:, 1536:]
    torch.testing.assert_close(out, gate / (1 + torch.exp(-gate)) * up)


def test_store_kv_writes_each_token_at_block_and_offset_of_its_slot() -> None:
    k = torch.randn(3, 2, 16)
    v = torch.randn(3, 2, 16)
    k_cache = torch.zeros(4, 8, 2, 16)
    v_cache = torch.zeros(4, 8, 2, 16)

    ops.store_kv(k, v, k_cache, v_cache, torch.tensor([2 * 8 + 5, 0, 3 * 8 + 7]))

    assert torch.equal(k_cache[2, 5], k[0]) and torch.equal(k_cache[0, 0], k[1]) and torch.equal(k_cache[3, 7], k[2])
    assert torch.equal(v_cache[2, 5], v[0]) and torch.equal(v_cache[0, 0], v[1]) and torch.equal(v_cache[3, 7], v[2])
    assert int((k_cache != 0).any(-1).any(-1).sum()) == 3


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize(("H", "KVH"), [(4, 4), (9, 3), (8, 2)])
def test_paged_decode_attention_equals_dense_attention_of_each_sequence(
    H: int, KVH: int, dtype: torch.dtype, tol: float
) -> None:
    hd, BS, ctx_lens = 64, 16, [1, 16, 37, 200]
    ks = [torch.randn(n, KVH, hd, dtype=dtype) for n in ctx_lens]
    vs = [torch.randn(n, KVH, hd, dtype=dtype) for n in ctx_lens]
    k_cache, v_cache, tables = _page(ks, vs, BS, num_blocks=40)
    q = torch.randn(len(ctx_lens), H, hd, dtype=dtype)

    out = ops.paged_decode_attention(q, k_cache, v_cache, tables, torch.tensor(ctx_lens, dtype=torch.int32), 0.125)

    expected = torch.cat([_dense_attention(q[i : i + 1], ks[i], vs[i], 0.125) for i in range(len(ctx_lens))])
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_paged_prefill_attention_is_causal_within_the_chunk_and_sees_the_cached_prefix(
    dtype: torch.dtype, tol: float
) -> None:
    H, KVH, hd, BS = 9, 3, 64, 16
    seqs = [(20, 20), (5, 37), (1, 9)]  # (new tokens, context length): fresh prompt, chunk after a prefix, one token
    ks = [torch.randn(ctx, KVH, hd, dtype=dtype) for _, ctx in seqs]
    vs = [torch.randn(ctx, KVH, hd, dtype=dtype) for _, ctx in seqs]
    k_cache, v_cache, tables = _page(ks, vs, BS, num_blocks=24)
    qs = [torch.randn(n, H, hd, dtype=dtype) for n, _ in seqs]

    out = ops.paged_prefill_attention(
        torch.cat(qs),
        k_cache,
        v_cache,
        tables,
        torch.tensor([n for n, _ in seqs]),
        torch.tensor([ctx for _, ctx in seqs], dtype=torch.int32),
        0.125,
    )

    expected = torch.cat([_dense_attention(qs[i], ks[i], vs[i], 0.125) for i in range(len(seqs))])
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)


def test_cpu_ops_never_import_triton() -> None:
    script = (
        "import sys, torch\n"
        "from inference.engine import ops\n"
        "q = torch.randn(1, 2, 16)\n"
        "ops.apply_rope(q, q, torch.zeros(1, dtype=torch.long), ops.build_rope_cache(16, 4, 1e4, None, 'cpu'))\n"
        "ops.rms_norm(torch.randn(1, 8), torch.ones(8), 1e-5)\n"
        "assert 'triton' not in sys.modules, 'triton was imported'\n"
    )
    repo_root = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-c", script], cwd=repo_root, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
