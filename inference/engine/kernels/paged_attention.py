"""Attention over the paged KV cache: split-K decode (with a reduction kernel) and varlen causal prefill.

Both gather K/V through the block table token by token, so the cache block size and the kernels' tile sizes
are independent. Softmax runs in float32 with exp2 (scores are pre-multiplied by log2(e)). tl.dot asks for
"ieee" precision so float32 inputs are not rounded to tf32; bf16/fp16 inputs use tensor cores either way.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import INTERPRETED, require, require_same_device
from .reference import paged_decode_attention_ref, paged_prefill_attention_ref

__all__ = [
    "paged_decode_attention",
    "paged_decode_attention_ref",
    "paged_prefill_attention",
    "paged_prefill_attention_ref",
]

LOG2E = 1.4426950408889634
PARTITION_SIZE = 256  # tokens per split-K partition of a decode
BLOCK_N = 64  # keys per inner step
BLOCK_M = 32  # query rows per prefill program


@triton.jit
def _load_kv_tile(
    cache_ptr, block_table_row, n, n_valid, BS, stride_block, stride_slot, kv_head_offset, d, DOT_FP32: tl.constexpr
):
    """K or V rows of tokens n (BLOCK,) of one kv head: (BLOCK, HD), found through the sequence's block table."""
    block = tl.load(block_table_row + n // BS, mask=n_valid, other=0).to(tl.int64)
    ptrs = cache_ptr + block[:, None] * stride_block + (n % BS)[:, None] * stride_slot + kv_head_offset + d[None, :]
    tile = tl.load(ptrs, mask=n_valid[:, None], other=0.0)
    if DOT_FP32:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _decode_partition_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    context_lens_ptr,
    out_ptr,  # (B, H, hd) when there is one partition, else the (B, H, P, hd) float32 partial sums
    m_ptr,  # (B, H, P) float32 running max (log2 domain)
    denom_ptr,  # (B, H, P) float32 softmax denominators
    scale_log2,
    BS,
    stride_qb,
    stride_qh,
    stride_block,
    stride_slot,
    stride_kvh,
    stride_bt,
    H,
    G,
    P,
    HD: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK: tl.constexpr,
    PARTITION: tl.constexpr,
    SINGLE_PARTITION: tl.constexpr,
    DOT_FP32: tl.constexpr,
):
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    part = tl.program_id(2)
    ctx = tl.load(context_lens_ptr + b)
    start = part * PARTITION
    if start < ctx:
        end = tl.minimum(start + PARTITION, ctx)
        g = tl.arange(0, BLOCK_G)  # the G query heads that read this kv head, padded for tl.dot
        heads = kv_head * G + g
        g_valid = g < G
        d = tl.arange(0, HD)
        q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=g_valid[:, None], other=0.0)
        if DOT_FP32:
            q = q.to(tl.float32)
        block_table_row = block_tables_ptr + b * stride_bt
        kv_head_offset = kv_head * stride_kvh
        m = tl.full((BLOCK_G,), float("-inf"), tl.float32)
        denom = tl.zeros((BLOCK_G,), tl.float32)
        acc = tl.zeros((BLOCK_G, HD), tl.float32)
        for n0 in range(start, end, BLOCK):
            n = n0 + tl.arange(0, BLOCK)
            n_valid = n < end
            k = _load_kv_tile(
                k_cache_ptr, block_table_row, n, n_valid, BS, stride_block, stride_slot, kv_head_offset, d, DOT_FP32
            )
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale_log2  # (BLOCK_G, BLOCK)
            s = tl.where(n_valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=1))
            alpha = tl.exp2(m - m_new)
            p = tl.exp2(s - m_new[:, None])
            denom = denom * alpha + tl.sum(p, axis=1)
            v = _load_kv_tile(
                v_cache_ptr, block_table_row, n, n_valid, BS, stride_block, stride_slot, kv_head_offset, d, DOT_FP32
            )
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            m = m_new
        if SINGLE_PARTITION:
            out = acc / denom[:, None]
            dst = out_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :]
            tl.store(dst, out.to(out_ptr.dtype.element_ty), mask=g_valid[:, None])
        else:
            row = (b * H + heads) * P + part  # (BLOCK_G,) index into (B, H, P)
            tl.store(out_ptr + row[:, None] * HD + d[None, :], acc, mask=g_valid[:, None])
            tl.store(m_ptr + row, m, mask=g_valid)
            tl.store(denom_ptr + row, denom, mask=g_valid)


@triton.jit
def _decode_reduce_kernel(
    partial_ptr,
    m_ptr,
    denom_ptr,
    context_lens_ptr,
    out_ptr,
    stride_ob,
    stride_oh,
    H,
    P,
    HD: tl.constexpr,
    BLOCK_P: tl.constexpr,
    PARTITION: tl.constexpr,
):
    """Combine one (sequence, head)'s partitions: rescale each to the global max and normalise once."""
    b = tl.program_id(0)
    h = tl.program_id(1)
    ctx = tl.load(context_lens_ptr + b)
    parts = tl.arange(0, BLOCK_P)
    used = parts < tl.cdiv(ctx, PARTITION)  # partitions past the context were never written
    row = (b * H + h) * P + parts
    m = tl.load(m_ptr + row, mask=used, other=float("-inf"))
    denom = tl.load(denom_ptr + row, mask=used, other=0.0)
    m_max = tl.max(m, axis=0)
    weight = tl.where(used, tl.exp2(m - m_max), 0.0)  # (BLOCK_P,)
    d = tl.arange(0, HD)
    partial = tl.load(partial_ptr + row[:, None] * HD + d[None, :], mask=used[:, None], other=0.0)
    out = tl.sum(partial * weight[:, None], axis=0) / tl.sum(denom * weight, axis=0)
    tl.store(out_ptr + b * stride_ob + h * stride_oh + d, out.to(out_ptr.dtype.element_ty))


@triton.jit
def _prefill_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    query_starts_ptr,
    query_lens_ptr,
    context_lens_ptr,
    out_ptr,
    scale_log2,
    BS,
    stride_qt,
    stride_qh,
    stride_block,
    stride_slot,
    stride_kvh,
    stride_bt,
    G,
    HD: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK: tl.constexpr,
    DOT_FP32: tl.constexpr,
):
    """Grid (B, H, query tiles): one tile of one sequence's new tokens for one query head."""
    b = tl.program_id(0)
    h = tl.program_id(1)
    tile = tl.program_id(2)
    q_len = tl.load(query_lens_ptr + b)
    if tile * BLOCK_Q < q_len:
        q_start = tl.load(query_starts_ptr + b)
        ctx = tl.load(context_lens_ptr + b)
        rows = tile * BLOCK_Q + tl.arange(0, BLOCK_Q)  # (BLOCK_Q,) index among the sequence's new tokens
        rows_valid = rows < q_len
        query_pos = ctx - q_len + rows  # absolute positions: each sees keys 0 ... query_pos
        d = tl.arange(0, HD)
        q_rows = q_ptr + (q_start + rows)[:, None] * stride_qt + h * stride_qh + d[None, :]
        q = tl.load(q_rows, mask=rows_valid[:, None], other=0.0)
        if DOT_FP32:
            q = q.to(tl.float32)
        block_table_row = block_tables_ptr + b * stride_bt
        kv_head_offset = (h // G) * stride_kvh
        m = tl.full((BLOCK_Q,), float("-inf"), tl.float32)
        denom = tl.zeros((BLOCK_Q,), tl.float32)
        acc = tl.zeros((BLOCK_Q, HD), tl.float32)
        last_key = tl.minimum(ctx, ctx - q_len + tile * BLOCK_Q + BLOCK_Q)  # keys past the tile's last row are unseen
        for n0 in range(0, last_key, BLOCK):
            n = n0 + tl.arange(0, BLOCK)
            n_valid = n < last_key
            k = _load_kv_tile(
                k_cache_ptr, block_table_row, n, n_valid, BS, stride_block, stride_slot, kv_head_offset, d, DOT_FP32
            )
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale_log2  # (BLOCK_Q, BLOCK)
            s = tl.where(n_valid[None, :] & (n[None, :] <= query_pos[:, None]), s, float("-inf"))
            # Every row (padded ones included) sees key 0, in the first tile, so m is finite from then on.
            m_new = tl.maximum(m, tl.max(s, axis=1))
            alpha = tl.exp2(m - m_new)
            p = tl.exp2(s - m_new[:, None])
            denom = denom * alpha + tl.sum(p, axis=1)
            v = _load_kv_tile(
                v_cache_ptr, block_table_row, n, n_valid, BS, stride_block, stride_slot, kv_head_offset, d, DOT_FP32
            )
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            m = m_new
        out = acc / denom[:, None]
        out_rows = out_ptr + (q_start + rows)[:, None] * stride_qt + h * stride_qh + d[None, :]
        tl.store(out_rows, out.to(out_ptr.dtype.element_ty), mask=rows_valid[:, None])


def _check_cache(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor) -> None:
    require(q.dim() == 3, f"q must be (tokens, H, hd), got {tuple(q.shape)}")
    H, hd = q.shape[1], q.shape[2]
    require(k_cache.dim() == 4 and k_cache.shape[3] == hd, f"k_cache must be (NB, BS, KVH, {hd})")
    require(v_cache.shape == k_cache.shape and v_cache.stride() == k_cache.stride(), "v_cache must match k_cache")
    require(k_cache.stride(3) == 1, "the caches must be contiguous in head_dim")
    KVH = k_cache.shape[2]
    require(H % KVH == 0, f"{H} query heads cannot share {KVH} kv heads evenly")
    require(hd >= 16 and (hd & (hd - 1)) == 0, f"head_dim must be a power of two >= 16, got {hd}")
    require(q.dtype == k_cache.dtype == v_cache.dtype, "q and the caches must share one dtype")
    require(q.stride(2) == 1, "q must be contiguous in head_dim")
    require(block_tables.dim() == 2 and block_tables.dtype == torch.int32, "block_tables must be (B, maxb) int32")
    require(block_tables.stride(1) == 1, "block_tables must be contiguous in its last dimension")


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    *,
    partition_size: int = PARTITION_SIZE,
) -> torch.Tensor:
    """q (B, H, hd) -> (B, H, hd): one new token per sequence against its first context_lens[b] cached tokens.

    block_tables (B, maxb) int32 (-1 padding is never read), context_lens (B,) int32, each >= 1 and <= maxb·BS.
    Grid (B, KVH, partitions): each program serves the H/KVH query heads of one kv head over one partition of
    the context, so each K/V tile is read once per kv head. The partition count comes from maxb, so no device
    sync is needed; with more than one partition a second kernel combines them.
    """
    _check_cache(q, k_cache, v_cache, block_tables)
    B, H, hd = q.shape
    _, BS, KVH, _ = k_cache.shape
    require(block_tables.shape[0] == B, f"block_tables has {block_tables.shape[0]} rows for {B} sequences")
    require(context_lens.shape == (B,) and context_lens.dtype == torch.int32, "context_lens must be (B,) int32")
    require(partition_size % BLOCK_N == 0, f"partition_size must be a multiple of {BLOCK_N}")
    require_same_device(q, k_cache, v_cache, block_tables, context_lens)
    out = torch.empty((B, H, hd), dtype=q.dtype, device=q.device)
    if B == 0:
        return out
    G = H // KVH
    P = triton.cdiv(block_tables.shape[1] * BS, partition_size)
    if P == 1:
        partial, m, denom = out, out, out  # the partition kernel writes the final output itself
    else:
        partial = torch.empty((B, H, P, hd), dtype=torch.float32, device=q.device)
        m = torch.empty((B, H, P), dtype=torch.float32, device=q.device)
        denom = torch.empty((B, H, P), dtype=torch.float32, device=q.device)
    _decode_partition_kernel[(B, KVH, P)](
        q,
        k_cache,
        v_cache,
        block_tables,
        context_lens,
        partial,
        m,
        denom,
        scale * LOG2E,
        BS,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        block_tables.stride(0),
        H,
        G,
        P,
        HD=hd,
        BLOCK_G=max(16, triton.next_power_of_2(G)),
        BLOCK=BLOCK_N,
        PARTITION=partition_size,
        SINGLE_PARTITION=P == 1,
        DOT_FP32=INTERPRETED,
    )
    if P > 1:
        _decode_reduce_kernel[(B, H)](
            partial,
            m,
            denom,
            context_lens,
            out,
            out.stride(0),
            out.stride(1),
            H,
            P,
            HD=hd,
            BLOCK_P=triton.next_power_of_2(P),
            PARTITION=partition_size,
        )
    return out


def paged_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    query_lens: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """q (T, H, hd), T = sum(query_lens) -> (T, H, hd). Sequence b's query_lens[b] new tokens sit at positions
    context_lens[b] - query_lens[b] ... context_lens[b] - 1 and see every key at or before their own position
    (their K/V already stored). query_lens, context_lens (B,) int32 or int64.

    Grid (B, H, cdiv(T, BLOCK_M)): T bounds every sequence's query length, so tiles past a sequence's end
    return at once and the launch needs no device sync.
    """
    _check_cache(q, k_cache, v_cache, block_tables)
    T, H, hd = q.shape
    _, BS, KVH, _ = k_cache.shape
    B = block_tables.shape[0]
    require(query_lens.shape == (B,) and context_lens.shape == (B,), "query_lens, context_lens must be (B,)")
    require_same_device(q, k_cache, v_cache, block_tables, query_lens, context_lens)
    out = torch.empty((T, H, hd), dtype=q.dtype, device=q.device)
    if T == 0:
        return out
    query_lens = query_lens.to(torch.int32)
    query_starts = torch.cumsum(query_lens, 0, dtype=torch.int32) - query_lens  # (B,) first row of each sequence
    _prefill_kernel[(B, H, triton.cdiv(T, BLOCK_M))](
        q,
        k_cache,
        v_cache,
        block_tables,
        query_starts,
        query_lens,
        context_lens.to(torch.int32),
        out,
        scale * LOG2E,
        BS,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        block_tables.stride(0),
        H // KVH,
        HD=hd,
        BLOCK_Q=BLOCK_M,
        BLOCK=BLOCK_N,
        DOT_FP32=INTERPRETED,
    )
    return out
