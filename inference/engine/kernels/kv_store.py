"""Write each new token's K and V into the paged cache at its slot: one program per token."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import require, require_last_dim_contiguous, require_same_device
from .reference import store_kv_ref

__all__ = ["store_kv", "store_kv_ref"]


@triton.jit
def _store_kv_kernel(
    k_ptr,
    v_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_mapping_ptr,
    k_stride_t,
    k_stride_h,
    v_stride_t,
    v_stride_h,
    KVH,
    HD: tl.constexpr,
    BLOCK_KVH: tl.constexpr,
):
    t = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + t).to(tl.int64)  # int64: NB · BS · KVH · hd can pass 2**31
    heads = tl.arange(0, BLOCK_KVH)[:, None]  # (BLOCK_KVH, 1)
    cols = tl.arange(0, HD)[None, :]  # (1, HD)
    mask = heads < KVH
    # The caches are contiguous (NB, BS, KVH, hd), so slot s starts at s · KVH · hd.
    dst = slot * KVH * HD + heads * HD + cols
    k = tl.load(k_ptr + t * k_stride_t + heads * k_stride_h + cols, mask=mask)
    v = tl.load(v_ptr + t * v_stride_t + heads * v_stride_h + cols, mask=mask)
    tl.store(k_cache_ptr + dst, k, mask=mask)
    tl.store(v_cache_ptr + dst, v, mask=mask)


def store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """k, v (T, KVH, hd) into k_cache, v_cache (NB, BS, KVH, hd) at slot_mapping (T,) int64 (block · BS + offset).

    Slots must lie in [0, NB · BS): they are not bounds-checked on the device.
    """
    require(k.dim() == 3 and k.shape == v.shape, f"k, v must be equal (T, KVH, hd), got {k.shape}, {v.shape}")
    T, KVH, hd = k.shape
    require(k_cache.dim() == 4 and k_cache.shape[2:] == (KVH, hd), f"k_cache must be (NB, BS, {KVH}, {hd})")
    require(v_cache.shape == k_cache.shape, "v_cache must have k_cache's shape")
    require(k_cache.is_contiguous() and v_cache.is_contiguous(), "the caches must be contiguous")
    require(k.dtype == v.dtype == k_cache.dtype == v_cache.dtype, "k, v and the caches must share one dtype")
    require(slot_mapping.shape == (T,) and slot_mapping.dtype == torch.int64, "slot_mapping must be (T,) int64")
    require((hd & (hd - 1)) == 0, f"head_dim must be a power of two, got {hd}")
    require_last_dim_contiguous("k", k)
    require_last_dim_contiguous("v", v)
    require_same_device(k, v, k_cache, v_cache, slot_mapping)
    if T == 0:
        return
    _store_kv_kernel[(T,)](
        k,
        v,
        k_cache,
        v_cache,
        slot_mapping,
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        KVH,
        HD=hd,
        BLOCK_KVH=triton.next_power_of_2(KVH),
    )
