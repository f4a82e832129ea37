"""The model's device-dispatching ops: Triton kernels for CUDA tensors, the PyTorch references otherwise.

The references (kernels/reference.py) are the CPU production path. Kernel modules import Triton, so they
are imported lazily on the CUDA path only: a CPU process never pays for Triton.

Shapes: T tokens in the flat batch, B sequences, H query heads, KVH kv heads, hd head dim, D hidden size,
NB cache blocks of BS tokens each. Activations are bf16 (fp16/fp32 also accepted); cos_sin is float32.
"""

from __future__ import annotations

import torch

from .kernels.reference import (
    DecodePlan,
    PrefillSeq,
    apply_rope_ref,
    build_rope_cache_ref,
    paged_decode_attention_ref,
    paged_prefill_attention_ref,
    plan_decode_ref,
    plan_prefill_ref,
    rms_norm_ref,
    rope_rows_ref,
    rotate_ref,
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


def rope_rows(positions: torch.Tensor, cos_sin: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """The step's cos|sin rows (T, 1, 2, hd/2) in ``dtype``, gathered once and shared by every layer's
    apply_rope_qkv. None on CUDA, where the kernel reads the table by position itself."""
    if positions.is_cuda:
        return None
    return rope_rows_ref(positions, cos_sin, dtype)


def apply_rope_qkv(
    qkv: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    positions: torch.Tensor,
    cos_sin: torch.Tensor,
    rows: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split the fused projection qkv (T, H + 2 KVH, hd) into rotated q (T, H, hd), rotated k (T, KVH, hd)
    and v (T, KVH, hd); ``rows`` from rope_rows for this step. q and k are adjacent in qkv, so on CPU they
    are rotated in one pass without copying them out first. Results may be non-contiguous views."""
    q, k, v = qkv.split([num_heads, num_kv_heads, num_kv_heads], dim=1)
    if rows is None:
        q, k = apply_rope(q, k, positions, cos_sin)
        return q, k, v
    qk = rotate_ref(qkv[:, : num_heads + num_kv_heads], rows)  # (T, H + KVH, hd)
    return qk[:, :num_heads], qk[:, num_heads:], v


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


def plan_decode(
    block_tables: torch.Tensor, context_lens: torch.Tensor, block_size: int, dtype: torch.dtype
) -> DecodePlan | None:
    """Gather indices and padding mask for paged_decode_attention, built once per step for every layer.
    None on CUDA, where the kernel walks the block tables itself."""
    if block_tables.is_cuda or block_tables.shape[0] == 0:
        return None
    return plan_decode_ref(block_tables, context_lens, block_size, dtype)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    plan: DecodePlan | None = None,
) -> torch.Tensor:
    """One new token per sequence: q (B, H, hd) against each sequence's first context_lens[b] cached
    tokens, found through block_tables (B, maxb) int32 padded with -1. Query head h reads kv head
    h // (H // KVH). ``plan``: plan_decode's result for this step (optional). Returns (B, H, hd)."""
    if q.is_cuda:
        from .kernels import paged_attention

        return paged_attention.paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)
    return paged_decode_attention_ref(q, k_cache, v_cache, block_tables, context_lens, scale, plan)


def plan_prefill(
    block_tables: torch.Tensor,
    query_lens: torch.Tensor,
    context_lens: torch.Tensor,
    block_size: int,
    group: int,
    dtype: torch.dtype,
) -> list[PrefillSeq] | None:
    """Per-sequence gather indices and causal masks for paged_prefill_attention, built once per step for
    every layer (``group`` = H // KVH). None on CUDA, where the kernel needs none."""
    if block_tables.is_cuda or block_tables.shape[0] == 0:
        return None
    return plan_prefill_ref(block_tables, query_lens, context_lens, block_size, group, dtype)


def paged_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_lens: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    plan: list[PrefillSeq] | None = None,
) -> torch.Tensor:
    """New tokens of B sequences laid end to end in q (T, H, hd), T = sum(query_lens). Sequence i's tokens
    attend to all its cached tokens and causally to each other; their K/V must already be stored with
    store_kv. query_lens, context_lens (B,) int. ``plan``: plan_prefill's result for this step (optional).
    Returns (T, H, hd)."""
    if q.is_cuda:
        from .kernels import paged_attention

        return paged_attention.paged_prefill_attention(
            q, k_cache, v_cache, block_tables, query_lens, context_lens, scale
        )
    return paged_prefill_attention_ref(q, k_cache, v_cache, block_tables, query_lens, context_lens, scale, plan)
