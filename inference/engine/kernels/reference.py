"""PyTorch references of every kernel: the CPU production path and the oracle the Triton kernels are tested against.

This module must not import Triton: a CPU process imports it through ops.py and should never pay for Triton.
Everything is vectorised torch with as few ops per call as possible, because at batch 1 the engine spends
microseconds per op and launches about 200 of them per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ModelLoadError


def rms_norm_ref(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """out = x / rms(x) * weight, after adding ``residual`` to ``x`` when given.

    x, residual: (T, D); weight: (D,). Returns (out (T, D), the sum that was normalised (T, D): the next residual).
    F.rms_norm computes the statistics in float32 for bf16/fp16 inputs and is one fused op on CPU.
    """
    if residual is not None:
        x = x + residual  # (T, D) in the activation dtype, as Hugging Face Llama does
    return F.rms_norm(x, (x.shape[-1],), weight, eps), x


def build_rope_cache_ref(
    head_dim: int, max_pos: int, theta: float, rope_scaling: dict | None, device: torch.device | str
) -> torch.Tensor:
    """cos/sin of every position: (max_pos, head_dim) float32, cos in the first half, sin in the second.

    Angles are computed in float64 so long positions keep their precision, then stored as float32.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))  # (hd/2,)
    inv_freq = _scale_inv_freq(inv_freq, rope_scaling)
    positions = torch.arange(max_pos, dtype=torch.float64)  # (max_pos,)
    angles = torch.outer(positions, inv_freq)  # (max_pos, hd/2)
    return torch.cat((angles.cos(), angles.sin()), dim=-1).to(device=device, dtype=torch.float32)


def _scale_inv_freq(inv_freq: torch.Tensor, rope_scaling: dict | None) -> torch.Tensor:
    """Apply a Hugging Face style ``rope_scaling`` dict (None/default, linear or llama3) to the frequencies."""
    if not rope_scaling:
        return inv_freq
    kind = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / float(rope_scaling["factor"])
    if kind == "llama3":
        factor = float(rope_scaling["factor"])
        low = float(rope_scaling.get("low_freq_factor", 1.0))
        high = float(rope_scaling.get("high_freq_factor", 4.0))
        old_context = float(rope_scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv_freq  # (hd/2,)
        # Long wavelengths (low frequencies) are slowed by `factor`, short ones kept, the band between blended.
        smooth = ((old_context / wavelen - low) / (high - low)).clamp(0.0, 1.0)
        return (1 - smooth) * inv_freq / factor + smooth * inv_freq
    raise ModelLoadError(f"Unsupported rope_scaling type {kind!r} (supported: default, linear, llama3).")


def apply_rope_ref(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (T, H, hd) and k (T, KVH, hd) in the "rotate_half" layout; returns new tensors.

    The model does not call this per layer: it gathers rope_rows_ref once per step and rotates q and k
    straight out of the fused qkv output with rotate_ref. This is the same maths for the op's callers.
    """
    H = q.shape[1]
    out = rotate_ref(torch.cat((q, k), dim=1), rope_rows_ref(positions, cos_sin, q.dtype))
    return out[:, :H], out[:, H:]


def rope_rows_ref(positions: torch.Tensor, cos_sin: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The cos|sin rows of a step's positions (T,) in the activation dtype: (T, 1, 2, hd/2).

    Every layer rotates at the same positions, so a step gathers these once and shares them.
    """
    T, hd = positions.shape[0], cos_sin.shape[1]
    return cos_sin.index_select(0, positions).to(dtype).view(T, 1, 2, hd // 2)


def rotate_ref(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x (T, N, hd), any row stride (e.g. the q|k heads of the fused qkv output), rows from rope_rows_ref
    -> new contiguous (T, N, hd).

    out[:half] = x1·cos − x2·sin, out[half:] = x2·cos + x1·sin, in the activation dtype like Hugging Face.
    """
    T, N, hd = x.shape
    half = hd // 2
    cos = rows[:, :, :1]  # (T, 1, 1, hd/2), broadcast over both halves
    sin = rows[:, :, 1]  # (T, 1, hd/2)
    x = x.view(T, N, 2, half)  # (T, N, 2, hd/2): only the last dim must be contiguous
    x1, x2 = x.unbind(2)
    out = x * cos  # (T, N, 2, hd/2)
    o1, o2 = out.unbind(2)
    o1.addcmul_(x2, sin, value=-1.0)
    o2.addcmul_(x1, sin)
    return out.view(T, N, hd)


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """x (T, 2F) -> silu(x[:, :F]) * x[:, F:] (T, F)."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate).mul_(up)


def store_kv_ref(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Write k, v (T, KVH, hd) into the caches (NB, BS, KVH, hd) at flat slots block_id * BS + offset."""
    KVH, hd = k.shape[1], k.shape[2]
    k_cache.view(-1, KVH, hd).index_copy_(0, slot_mapping, k)
    v_cache.view(-1, KVH, hd).index_copy_(0, slot_mapping, v)


@dataclass
class DecodePlan:
    """What paged_decode_attention_ref needs beyond q and the caches, built once per step for all layers."""

    blocks: torch.Tensor  # (B·nb,) int64: each sequence's first nb block ids, -1 pads clamped to block 0
    length: int  # L: K/V rows each sequence attends over (the longest context)
    bias: torch.Tensor | None  # (B, 1, 1, L) 0 / -inf in the activation dtype; None when no row is padding


def plan_decode_ref(
    block_tables: torch.Tensor, context_lens: torch.Tensor, block_size: int, dtype: torch.dtype
) -> DecodePlan:
    """block_tables (B, maxb) int32 -1 padded, context_lens (B,) int32 -> the step's DecodePlan.

    An additive bias is a little faster in SDPA than a boolean mask; a padded (-1) block is clamped to
    block 0, whose rows the bias hides.
    """
    B = block_tables.shape[0]
    lens = context_lens.tolist()
    L = max(lens)
    nb = (L + block_size - 1) // block_size
    blocks = block_tables[:, :nb].clamp(min=0).reshape(-1).long()  # (B·nb,)
    bias = None
    if min(lens) < L:
        padding = torch.arange(L, device=block_tables.device) >= context_lens.unsqueeze(1)  # (B, L)
        bias = torch.zeros(B, 1, 1, L, dtype=dtype, device=block_tables.device)
        bias.masked_fill_(padding.view(B, 1, 1, L), float("-inf"))
    return DecodePlan(blocks=blocks, length=L, bias=bias)


def paged_decode_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    plan: DecodePlan | None = None,
) -> torch.Tensor:
    """One query token per sequence against its paged K/V: q (B, H, hd) -> (B, H, hd).

    block_tables (B, maxb) int32 padded with -1; context_lens (B,) int32; ``plan`` from plan_decode_ref for
    these two (built here when not given). All sequences go through one gather into a padded
    (B, L, KVH, hd) tensor and one attention call, rows at or past each context length masked.
    """
    B, H, hd = q.shape
    NB, BS, KVH, _ = k_cache.shape
    G = H // KVH
    if plan is None:
        plan = plan_decode_ref(block_tables, context_lens, BS, q.dtype)
    L = plan.length
    # Query head h reads kv head h // G, so the G heads sharing a kv head are consecutive: (B, KVH, G, hd).
    q = q.view(B, KVH, G, hd)
    k = k_cache.view(NB, -1).index_select(0, plan.blocks).view(B, -1, KVH, hd)[:, :L].transpose(1, 2)
    v = v_cache.view(NB, -1).index_select(0, plan.blocks).view(B, -1, KVH, hd)[:, :L].transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=plan.bias, scale=scale)  # (B, KVH, G, hd)
    return out.reshape(B, H, hd)  # CUDA SDPA may return it non-contiguous


@dataclass
class PrefillSeq:
    """One sequence's share of a prefill step, for paged_prefill_attention_ref."""

    start: int  # its first token in the flat batch
    query_len: int
    context_len: int
    blocks: torch.Tensor  # (nb,) int64 block ids holding its context_len cached rows
    bias: torch.Tensor  # (G·query_len, context_len) 0 / -inf, rows ordered (g, t)


def plan_prefill_ref(
    block_tables: torch.Tensor,
    query_lens: torch.Tensor,
    context_lens: torch.Tensor,
    block_size: int,
    group: int,
    dtype: torch.dtype,
) -> list[PrefillSeq]:
    """The step's per-sequence gather indices and masks, built once for all layers. ``group`` = H // KVH.

    The mask is an additive bias even without a cached prefix: SDPA's is_causal needs the G query heads
    unfolded against expanded K/V, which measured no faster here.
    """
    plan = []
    start = 0
    device = block_tables.device
    for i, (q_len, ctx_len) in enumerate(zip(query_lens.tolist(), context_lens.tolist(), strict=True)):
        blocks = block_tables[i, : (ctx_len + block_size - 1) // block_size].long()
        # Query t sits at absolute position ctx_len - q_len + t and sees keys 0 ... that position.
        query_pos = torch.arange(ctx_len - q_len, ctx_len, device=device)  # (q_len,)
        hidden = torch.arange(ctx_len, device=device) > query_pos.unsqueeze(1)  # (q_len, ctx)
        bias = torch.zeros(q_len, ctx_len, dtype=dtype, device=device).masked_fill_(hidden, float("-inf"))
        bias = bias.repeat(group, 1)  # (G·q_len, ctx): query rows are ordered (g, t)
        plan.append(PrefillSeq(start=start, query_len=q_len, context_len=ctx_len, blocks=blocks, bias=bias))
        start += q_len
    return plan


def paged_prefill_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_lens: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    plan: list[PrefillSeq] | None = None,
) -> torch.Tensor:
    """New tokens of B sequences, laid end to end in q (T, H, hd), against their paged K/V -> (T, H, hd).

    Sequence i's query_lens[i] tokens sit at positions context_lens[i] - query_lens[i] ... context_lens[i] - 1;
    each attends to every cached token before it and causally to the new ones (their K/V already stored).
    ``plan`` from plan_prefill_ref (built here when not given). One attention call per sequence; the G query
    heads of a kv head are folded into the query rows so K/V are never repeated.
    """
    _, H, hd = q.shape
    NB, BS, KVH, _ = k_cache.shape
    G = H // KVH
    if plan is None:
        plan = plan_prefill_ref(block_tables, query_lens, context_lens, BS, G, q.dtype)
    out = torch.empty_like(q)
    for s in plan:
        q_len, ctx_len = s.query_len, s.context_len
        k = k_cache.view(NB, -1).index_select(0, s.blocks).view(-1, KVH, hd)[:ctx_len]  # (ctx, KVH, hd)
        v = v_cache.view(NB, -1).index_select(0, s.blocks).view(-1, KVH, hd)[:ctx_len]
        k = k.transpose(0, 1).unsqueeze(0)  # (1, KVH, ctx, hd)
        v = v.transpose(0, 1).unsqueeze(0)
        # (q_len, H, hd) -> (1, KVH, G · q_len, hd), rows ordered (g, t). SDPA must get 4-D inputs: 3-D ones
        # miss the fused CPU kernel and run several times slower.
        qi = q[s.start : s.start + q_len].view(q_len, KVH, G, hd).permute(1, 2, 0, 3).reshape(1, KVH, G * q_len, hd)
        oi = F.scaled_dot_product_attention(qi, k, v, attn_mask=s.bias, scale=scale)
        out[s.start : s.start + q_len] = oi.view(KVH, G, q_len, hd).permute(2, 0, 1, 3).reshape(q_len, H, hd)
    return out
