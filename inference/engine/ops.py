"""The model's device-dispatching ops: Triton kernels for CUDA tensors, the PyTorch references otherwise.

The references (kernels/reference.py) are the CPU production path. Kernel modules import Triton, so they
are imported lazily on the CUDA path only: a CPU process never pays for Triton.

Shapes: T tokens in the flat batch, B sequences, H query heads, KVH kv heads, hd head dim, D hidden size,
NB cache blocks of BS tokens each. Activations are bf16 (fp16/fp32 also accepted); cos_sin is float32.
"""

from __future__ import annotations

import torch

from .kernels.reference import (
    apply_rope_ref,
    build_rope_cache_ref,
    paged_decode_attention_ref,
    paged_prefill_attention_ref,
    rms_norm_ref,
    silu_and_mul_ref,
    store_kv_ref,
)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (T, D), weight (D,). With residual (T, D): r = x + residual, returns (rmsnorm(r) * weight, r).
    Without: returns (rmsnorm(x) * weight, x)."""
    if x.is_cuda:
        from .kernels import rmsnorm

        return rmsnorm.rms_norm(x, weight, eps, residual)
    return rms_norm_ref(x, weight, eps, residual)


def build_rope_cache(
    head_dim: int, max_pos: int, theta: float, rope_scaling: dict | None, device: torch.device | str
) -> torch.Tensor:
    """(max_pos, head_dim) float32: cos of each position's angles in the first half, sin in the second.

    rope_scaling is a Hugging Face dict (None, "default", "linear" or "llama3"); anything else raises
    ModelLoadError. Built once per model; apply_rope only indexes it.
    """
    return build_rope_cache_ref(head_dim, max_pos, theta, rope_scaling, device)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding, "rotate_half" (NeoX) layout. q (T, H, hd), k (T, KVH, hd), positions (T,) int64.

    Returns new (q, k) of the same shapes; they may be non-contiguous views (use reshape, not view).
    """
    if q.is_cuda:
        from .kernels import rope

        return rope.apply_rope(q, k, positions, cos_sin)
    return apply_rope_ref(q, k, positions, cos_sin)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x (T, 2F) -> silu(x[:, :F]) * x[:, F:] (T, F)."""
    if x.is_cuda:
        from .kernels import silu_mul

        return silu_mul.silu_and_mul(x)
    return silu_and_mul_ref(x)


def store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Write k, v (T, KVH, hd) into k_cache, v_cache (NB, BS, KVH, hd) at slot_mapping (T,) int64
    (slot = block_id * BS + offset). The caches must be contiguous."""
    if k.is_cuda:
        from .kernels import kv_store

        kv_store.store_kv(k, v, k_cache, v_cache, slot_mapping)
        return
    store_kv_ref(k, v, k_cache, v_cache, slot_mapping)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One new token per sequence: q (B, H, hd) against each sequence's first context_lens[b] cached
    tokens, found through block_tables (B, maxb) int32 padded with -1. Query head h reads kv head
    h // (H // KVH). Returns (B, H, hd)."""
    if q.is_cuda:
        from .kernels import paged_attention

        return paged_attention.paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)
    return paged_decode_attention_ref(q, k_cache, v_cache, block_tables, context_lens, scale)


def paged_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_lens: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """New tokens of B sequences laid end to end in q (T, H, hd), T = sum(query_lens). Sequence i's tokens
    attend to all its cached tokens and causally to each other; their K/V must already be stored with
    store_kv. query_lens, context_lens (B,) int. Returns (T, H, hd)."""
    if q.is_cuda:
        from .kernels import paged_attention

        return paged_attention.paged_prefill_attention(
            q, k_cache, v_cache, block_tables, query_lens, context_lens, scale
        )
    return paged_prefill_attention_ref(q, k_cache, v_cache, block_tables, query_lens, context_lens, scale)
