"""RMSNorm with an optional fused residual add: one program per token row."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import require, require_last_dim_contiguous, require_same_device
from .reference import rms_norm_ref

__all__ = ["rms_norm", "rms_norm_ref"]


@triton.jit
def _rms_norm_kernel(
    x_ptr,
    residual_ptr,
    weight_ptr,
    out_ptr,
    residual_out_ptr,
    x_stride,
    residual_stride,
    D,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        res = tl.load(residual_ptr + row * residual_stride + cols, mask=mask, other=0.0)
        # Add in float32 and round the sum to the activation dtype before normalising it, as torch does.
        x = (x.to(tl.float32) + res.to(tl.float32)).to(x.dtype)
        tl.store(residual_out_ptr + row * D + cols, x, mask=mask)
    xf = x.to(tl.float32)
    mean_sq = tl.sum(xf * xf, axis=0) / D
    w = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    out = xf * tl.rsqrt(mean_sq + eps) * w
    tl.store(out_ptr + row * D + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (T, D), weight (D,), optional residual (T, D). Returns (rmsnorm(x [+ residual]) * weight, x [+ residual])."""
    require(x.dim() == 2, f"x must be (T, D), got {tuple(x.shape)}")
    T, D = x.shape
    require(weight.shape == (D,), f"weight must be ({D},), got {tuple(weight.shape)}")
    require_last_dim_contiguous("x", x)
    require(weight.is_contiguous(), "weight must be contiguous")
    if residual is not None:
        require(residual.shape == x.shape, f"residual must be {tuple(x.shape)}, got {tuple(residual.shape)}")
        require(residual.dtype == x.dtype, f"residual dtype {residual.dtype} differs from x dtype {x.dtype}")
        require_last_dim_contiguous("residual", residual)
        require_same_device(x, weight, residual)
    else:
        require_same_device(x, weight)
    out = torch.empty((T, D), dtype=x.dtype, device=x.device)
    residual_out = torch.empty_like(out) if residual is not None else x
    if T == 0:
        return out, residual_out
    BLOCK_D = triton.next_power_of_2(D)
    _rms_norm_kernel[(T,)](
        x,
        residual if residual is not None else x,
        weight,
        out,
        residual_out,
        x.stride(0),
        residual.stride(0) if residual is not None else 0,
        D,
        eps,
        HAS_RESIDUAL=residual is not None,
        BLOCK_D=BLOCK_D,
        num_warps=4 if BLOCK_D <= 4096 else 8,
    )
    return out, residual_out
