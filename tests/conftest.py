"""Suite-wide setup. Triton's interpreter must be chosen before any kernel module is imported."""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    # No GPU: every Triton kernel runs under the interpreter on CPU tensors (see shared notes).
    os.environ.setdefault("TRITON_INTERPRET", "1")
