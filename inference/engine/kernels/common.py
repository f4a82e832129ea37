"""Helpers shared by the Triton kernel wrappers (this module itself imports no Triton)."""

from __future__ import annotations

import os

import torch

# Triton reads TRITON_INTERPRET when a kernel is defined; the wrappers read it once the same way. Under the
# interpreter, tl.dot on bf16/fp16 operands returns garbage, so the attention kernels cast to fp32 first.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def require(condition: bool, message: str) -> None:
    """Reject a malformed call to a kernel wrapper: a caller's bug, reported before the kernel reads memory."""
    if not condition:
        raise ValueError(message)


def require_same_device(*tensors: torch.Tensor) -> None:
    device = tensors[0].device
    require(all(t.device == device for t in tensors), f"tensors on different devices: {[t.device for t in tensors]}")


def require_last_dim_contiguous(name: str, t: torch.Tensor) -> None:
    require(t.stride(-1) == 1, f"{name} must be contiguous in its last dimension, got strides {t.stride()}")
