"""Weight representations and the matmul path.

A loader hands over each weight either as a dense tensor or as a ``GGMLWeight`` (llama.cpp blocks,
untouched). ``build_linear`` turns one or more of them (fused along the output dimension) into a
``Linear``, which on CPU may hold two forms of the same weight:

- int4 packed for PyTorch's weight-only kernel, taken bit for bit from Q4_0/Q4_1 blocks: fastest
  when a step has few tokens (decode), since the matmul is bound by reading the weights;
- dense bf16: faster once a step has enough tokens (prefill, large batches) to be compute bound.

Everything else (F16, BF16, Q8_0, K-quants, ...) is dequantized to dense. Q8_0 is dequantized rather
than requantized to per-row int8: its 32-element block scales do not survive one scale per row (logit
error about 10x that of bf16 on SmolLM2's embedding), and PyTorch's int8 kernel takes only per-row scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from .errors import ModelLoadError

INT4_GROUP = 32  # one Q4_0/Q4_1 block = one PyTorch int4 group

# Above this many tokens in a step the dense bf16 matmul beats the int4 one on this CPU kind
# (measured on SmolLM2-135M's shapes; see the model notes). Steps at or below it use int4.
INT4_MAX_TOKENS = 8

_int4_mm = torch.ops.aten._weight_int4pack_mm_for_cpu
_int4_pack = torch.ops.aten._convert_weight_to_int4pack_for_cpu


@dataclass
class GGMLWeight:
    """A GGUF tensor still in llama.cpp's block format."""

    data: np.ndarray  # (N, row_bytes) uint8: each row is K // block_size blocks
    qtype: GGMLQuantizationType
    shape: tuple[int, int]  # (N, K) as PyTorch sees the weight (out, in)

    @property
    def is_int4(self) -> bool:
        return self.qtype in (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1)


Weight = torch.Tensor | GGMLWeight


def _blocks(w: GGMLWeight) -> torch.Tensor:
    block_elems, block_bytes = GGML_QUANT_SIZES[w.qtype]
    n, k = w.shape
    # np.array copies out of the read-only memory map, which torch.from_numpy needs to be writable.
    return torch.from_numpy(np.array(w.data, dtype=np.uint8)).view(n, k // block_elems, block_bytes)


def _fp16_field(blocks: torch.Tensor, start: int) -> torch.Tensor:
    return blocks[..., start : start + 2].contiguous().view(torch.float16).float()  # (N, nb, 1)


def int4_parts(w: GGMLWeight) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_0/Q4_1 -> (q (N, K) int32 in 0..15, scale (N, K/32) f32, zero (N, K/32) f32) such that
    weight = (q - 8) * scale + zero, which is PyTorch's int4 weight-only convention."""
    blocks = _blocks(w)  # (N, nb, 18 or 20)
    d = _fp16_field(blocks, 0)
    if w.qtype == GGMLQuantizationType.Q4_1:
        zero = _fp16_field(blocks, 2) + 8 * d  # llama.cpp: d * q + m
        qs = blocks[..., 4:]
    else:
        zero = torch.zeros_like(d)  # llama.cpp: d * (q - 8)
        qs = blocks[..., 2:]
    # Elements 0-15 of a block are the low nibbles, 16-31 the high ones.
    q = torch.cat([qs & 0x0F, qs >> 4], dim=-1).reshape(w.shape[0], -1).to(torch.int32)  # (N, K)
    return q, d.squeeze(-1), zero.squeeze(-1)


def dequantize(w: Weight, dtype: torch.dtype) -> torch.Tensor:
    """Any weight as a dense (N, K) tensor of ``dtype``."""
    if isinstance(w, torch.Tensor):
        return w.to(dtype)
    n, k = w.shape
    if w.is_int4:
        q, scale, zero = int4_parts(w)
        out = (q.view(n, -1, INT4_GROUP) - 8) * scale[..., None] + zero[..., None]
        return out.reshape(n, k).to(dtype)
    if w.qtype == GGMLQuantizationType.Q8_0:
        blocks = _blocks(w)  # (N, nb, 34): fp16 d then 32 int8
        q = blocks[..., 2:].contiguous().view(torch.int8).float()
        return (q * _fp16_field(blocks, 0)).reshape(n, k).to(dtype)
    if w.qtype not in GGML_QUANT_SIZES:
        raise ModelLoadError(f"Unsupported GGUF tensor type {w.qtype!r}.")
    return torch.from_numpy(gguf_dequantize(np.asarray(w.data), w.qtype)).reshape(n, k).to(dtype)


class Linear:
    """y = x @ W.T (+ b), with W as int4 packed, dense, or both (then picked by the step's token count)."""

    def __init__(
        self,
        dense: torch.Tensor | None,
        *,
        int4: tuple[torch.Tensor, torch.Tensor] | None = None,
        bias: torch.Tensor | None = None,
    ) -> None:
        if dense is None and int4 is None:
            raise ValueError("a Linear needs a dense or an int4 weight")
        self.dense = dense  # (N, K)
        self.packed, self.scales_zeros = int4 if int4 is not None else (None, None)  # (N, K/2), (K/32, N, 2)
        self.bias = bias  # (N,)

    @property
    def uses_int4(self) -> bool:
        return self.packed is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (T, K) -> (T, N)
        if self.packed is not None and (self.dense is None or x.shape[0] <= INT4_MAX_TOKENS):
            y = _int4_mm(x, self.packed, INT4_GROUP, self.scales_zeros)
            return y if self.bias is None else y + self.bias
        return F.linear(x, self.dense, self.bias)


def can_pack_int4(parts: list[Weight], device: torch.device) -> bool:
    """Whether PyTorch's CPU int4 kernel takes these weights bit for bit (see shared notes for the shape rules)."""
    if device.type != "cpu" or not all(isinstance(p, GGMLWeight) and p.is_int4 for p in parts):
        return False
    n = sum(p.shape[0] for p in parts)
    k = parts[0].shape[1]
    return n % 16 == 0 and k % INT4_GROUP == 0 and all(p.shape[1] == k for p in parts)


def pack_int4(parts: list[GGMLWeight], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_0/Q4_1 weights (fused along N) -> (packed (N, K/2) uint8, scales_and_zeros (K/32, N, 2) dtype)."""
    qs, scales, zeros = zip(*(int4_parts(p) for p in parts), strict=True)
    packed = _int4_pack(torch.cat(qs), 1)
    scales_zeros = torch.stack([torch.cat(scales), torch.cat(zeros)], dim=-1)  # (N, K/32, 2)
    # The kernel reads the scales in the activation dtype.
    return packed, scales_zeros.transpose(0, 1).contiguous().to(dtype)


def build_linear(
    parts: list[Weight],
    *,
    bias: list[torch.Tensor] | None = None,
    device: torch.device,
    dtype: torch.dtype,
    keep_dense: bool = True,
) -> Linear:
    """Fuse ``parts`` along the output dimension (e.g. q, k, v) into one Linear.

    Q4_0/Q4_1 on CPU are kept packed as int4; ``keep_dense`` also keeps a dense copy for steps with
    many tokens. Everything else becomes dense ``dtype`` on ``device``.
    """
    fused_bias = torch.cat([b.to(dtype) for b in bias]).to(device) if bias else None
    if can_pack_int4(parts, device):
        int4 = pack_int4(parts, dtype)  # type: ignore[arg-type]
        dense = torch.cat([dequantize(p, dtype) for p in parts]) if keep_dense else None
        return Linear(dense, int4=int4, bias=fused_bias)
    dense = torch.cat([dequantize(p, dtype) for p in parts]).to(device)
    return Linear(dense, bias=fused_bias)
