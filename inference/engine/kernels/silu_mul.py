"""SiLU(gate) · up for the MLP: grid (T, column blocks)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import require, require_last_dim_contiguous
from .reference import silu_and_mul_ref

__all__ = ["silu_and_mul", "silu_and_mul_ref"]

BLOCK_F = 1024


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, x_stride, F, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < F
    gate = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * x_stride + F + cols, mask=mask, other=0.0).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(out_ptr + row * F + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x (T, 2F) -> silu(x[:, :F]) * x[:, F:] (T, F), computed in float32 and rounded once."""
    require(x.dim() == 2 and x.shape[1] % 2 == 0, f"x must be (T, 2F), got {tuple(x.shape)}")
    require_last_dim_contiguous("x", x)
    T, F = x.shape[0], x.shape[1] // 2
    out = torch.empty((T, F), dtype=x.dtype, device=x.device)
    if T == 0:
        return out
    _silu_and_mul_kernel[(T, triton.cdiv(F, BLOCK_F))](x, out, x.stride(0), F, BLOCK=BLOCK_F)
    return out
