"""Rotary position embedding in the "rotate_half" (NeoX) layout: one program per token rotates all its q and k heads."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import require, require_last_dim_contiguous, require_same_device
from .reference import apply_rope_ref

__all__ = ["apply_rope", "apply_rope_ref"]


@triton.jit
def _rotate_heads(
    x_ptr, out_ptr, x_stride_t, x_stride_h, t, cos, sin, n_heads, HALF: tl.constexpr, BLOCK_H: tl.constexpr
):
    heads = tl.arange(0, BLOCK_H)[:, None]  # (BLOCK_H, 1)
    cols = tl.arange(0, HALF)[None, :]  # (1, HALF)
    mask = heads < n_heads
    src = x_ptr + t * x_stride_t + heads * x_stride_h + cols
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)  # (BLOCK_H, HALF)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    dst = out_ptr + (t * n_heads + heads) * (2 * HALF) + cols  # the output is contiguous (T, n_heads, hd)
    tl.store(dst, (x1 * cos - x2 * sin).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, (x2 * cos + x1 * sin).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rope_kernel(
    q_ptr,
    k_ptr,
    q_out_ptr,
    k_out_ptr,
    positions_ptr,
    cos_sin_ptr,
    q_stride_t,
    q_stride_h,
    k_stride_t,
    k_stride_h,
    H,
    KVH,
    HALF: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_KVH: tl.constexpr,
):
    t = tl.program_id(0)
    pos = tl.load(positions_ptr + t)
    cols = tl.arange(0, HALF)[None, :]  # (1, HALF)
    cos = tl.load(cos_sin_ptr + pos * (2 * HALF) + cols)  # (1, HALF) float32
    sin = tl.load(cos_sin_ptr + pos * (2 * HALF) + HALF + cols)
    _rotate_heads(q_ptr, q_out_ptr, q_stride_t, q_stride_h, t, cos, sin, H, HALF, BLOCK_H)
    _rotate_heads(k_ptr, k_out_ptr, k_stride_t, k_stride_h, t, cos, sin, KVH, HALF, BLOCK_KVH)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """q (T, H, hd), k (T, KVH, hd), positions (T,) int64, cos_sin (max_pos, hd) float32 -> new contiguous (q, k).

    q and k may be strided views (for example slices of a fused qkv projection) as long as hd is contiguous.
    Positions must lie in [0, max_pos): they are not bounds-checked on the device.
    """
    require(q.dim() == 3 and k.dim() == 3, f"q, k must be (T, heads, hd), got {tuple(q.shape)}, {tuple(k.shape)}")
    T, H, hd = q.shape
    require(k.shape[0] == T and k.shape[2] == hd, f"k {tuple(k.shape)} does not match q {tuple(q.shape)}")
    require(hd % 2 == 0 and (hd & (hd - 1)) == 0, f"head_dim must be a power of two, got {hd}")
    require(k.dtype == q.dtype, f"k dtype {k.dtype} differs from q dtype {q.dtype}")
    require(positions.shape == (T,) and positions.dtype == torch.int64, "positions must be (T,) int64")
    require(cos_sin.dim() == 2 and cos_sin.shape[1] == hd, f"cos_sin must be (max_pos, {hd}), got {cos_sin.shape}")
    require(cos_sin.dtype == torch.float32 and cos_sin.is_contiguous(), "cos_sin must be contiguous float32")
    require_last_dim_contiguous("q", q)
    require_last_dim_contiguous("k", k)
    require(positions.is_contiguous(), "positions must be contiguous")
    require_same_device(q, k, positions, cos_sin)
    KVH = k.shape[1]
    q_out = torch.empty((T, H, hd), dtype=q.dtype, device=q.device)
    k_out = torch.empty((T, KVH, hd), dtype=k.dtype, device=k.device)
    if T == 0:
        return q_out, k_out
    _rope_kernel[(T,)](
        q,
        k,
        q_out,
        k_out,
        positions,
        cos_sin,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        H,
        KVH,
        HALF=hd // 2,
        BLOCK_H=triton.next_power_of_2(H),
        BLOCK_KVH=triton.next_power_of_2(KVH),
    )
    return q_out, k_out
