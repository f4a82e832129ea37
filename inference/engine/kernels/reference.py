"""PyTorch references of every kernel: the CPU production path and the oracle the Triton kernels are tested against.

This module must not import Triton: a CPU process imports it through ops.py and should never pay for Triton.
Everything is vectorised torch with as few ops per call as possible, because at batch 1 the engine spends
microseconds per op and launches about 200 of them per token.
"""

from __future__ import annotations

import math

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

    out[:half] = x1·cos − x2·sin, out[half:] = x2·cos + x1·sin, computed in the activation dtype like
    Hugging Face. q and k go through together (one cat) to halve the number of small ops.
    """
    T, H, hd = q.shape
    half = hd // 2
    cs = cos_sin.index_select(0, positions).to(q.dtype).view(T, 1, 2, half)  # (T, 1, 2, hd/2)
    cos = cs[:, :, :1]  # (T, 1, 1, hd/2), broadcast over both halves
    sin = cs[:, :, 1]  # (T, 1, hd/2)
    x = torch.cat((q, k), dim=1).view(T, -1, 2, half)  # (T, H + KVH, 2, hd/2)
    x1, x2 = x.unbind(2)
    out = x * cos  # (T, H + KVH, 2, hd/2)
    o1, o2 = out.unbind(2)
    o1.addcmul_(x2, sin, value=-1.0)
    o2.addcmul_(x1, sin)
    out = out.view(T, -1, hd)
    return out[:, :H], out[:, H:]


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


def paged_decode_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One query token per sequence against its paged K/V: q (B, H, hd) -> (B, H, hd).

    block_tables (B, maxb) int32 padded with -1; context_lens (B,) int32. All sequences go through one
    gather and one attention call: K/V blocks are gathered into a padded (B, maxb·BS, KVH, hd) tensor and
    positions at or past each context length are masked (a -1 pad is clamped to block 0, whose rows are
    masked). A single sequence needs no mask: its K/V are gathered and sliced to its exact length.
    """
    B, H, hd = q.shape
    NB, BS, KVH, _ = k_cache.shape
    G = H // KVH
    # Query head h reads kv head h // G, so the G heads sharing a kv head are consecutive: (B, KVH, G, hd).
    q = q.view(B, KVH, G, hd)
    if B == 1:
        n = int(context_lens[0])
        k = _gather(k_cache, block_tables[0], n).transpose(0, 1).unsqueeze(0)  # (1, KVH, n, hd)
        v = _gather(v_cache, block_tables[0], n).transpose(0, 1).unsqueeze(0)
        return F.scaled_dot_product_attention(q, k, v, scale=scale).view(B, H, hd)
    L = block_tables.shape[1] * BS
    blocks = block_tables.reshape(-1).clamp(min=0)  # (B·maxb,)
    k = k_cache.view(NB, -1).index_select(0, blocks).view(B, L, KVH, hd).transpose(1, 2)  # (B, KVH, L, hd)
    v = v_cache.view(NB, -1).index_select(0, blocks).view(B, L, KVH, hd).transpose(1, 2)  # (B, KVH, L, hd)
    valid = torch.arange(L, device=q.device) < context_lens.unsqueeze(1)  # (B, L)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=valid.view(B, 1, 1, L), scale=scale)
    return out.view(B, H, hd)


def paged_prefill_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_lens: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """New tokens of B sequences, laid end to end in q (T, H, hd), against their paged K/V -> (T, H, hd).

    Sequence i's query_lens[i] tokens sit at positions context_lens[i] - query_lens[i] ... context_lens[i] - 1;
    each attends to every cached token before it and causally to the new ones (their K/V already stored).
    One attention call per sequence; the G query heads of a kv head are folded into the query rows so K/V
    are never repeated.
    """
    _, H, hd = q.shape
    KVH = k_cache.shape[2]
    G = H // KVH
    out = torch.empty_like(q)
    start = 0
    for i, (q_len, ctx_len) in enumerate(zip(query_lens.tolist(), context_lens.tolist(), strict=True)):
        k = _gather(k_cache, block_tables[i], ctx_len).transpose(0, 1).unsqueeze(0)  # (1, KVH, ctx, hd)
        v = _gather(v_cache, block_tables[i], ctx_len).transpose(0, 1).unsqueeze(0)  # (1, KVH, ctx, hd)
        # (q_len, H, hd) -> (1, KVH, G · q_len, hd), rows ordered (g, t). SDPA must get 4-D inputs: 3-D ones
        # miss the fused CPU kernel and run several times slower.
        qi = q[start : start + q_len].view(q_len, KVH, G, hd).permute(1, 2, 0, 3).reshape(1, KVH, G * q_len, hd)
        # Query t sits at absolute position ctx_len - q_len + t and sees keys 0 ... that position.
        query_pos = torch.arange(ctx_len - q_len, ctx_len, device=q.device)  # (q_len,)
        allowed = torch.arange(ctx_len, device=q.device) <= query_pos.unsqueeze(1)  # (q_len, ctx)
        oi = F.scaled_dot_product_attention(qi, k, v, attn_mask=allowed.repeat(G, 1), scale=scale)
        out[start : start + q_len] = oi.view(KVH, G, q_len, hd).permute(2, 0, 1, 3).reshape(q_len, H, hd)
        start += q_len
    return out


def _gather(cache: torch.Tensor, block_table: torch.Tensor, n: int) -> torch.Tensor:
    """The first n cached rows of one sequence: cache (NB, BS, KVH, hd), block_table (maxb,) -> (n, KVH, hd).

    index_select on a flat (NB, BS·KVH·hd) view is several times faster than advanced indexing.
    """
    NB, BS, KVH, hd = cache.shape
    blocks = block_table[: (n + BS - 1) // BS]
    return cache.view(NB, -1).index_select(0, blocks).view(-1, KVH, hd)[:n]
