"""Weight representations and the matmul path.

A loader hands over each weight either as a dense tensor or as a ``GGMLWeight`` (llama.cpp blocks,
untouched). ``build_linear`` turns one or more of them (fused along the output dimension) into a
``Linear``, which on CPU may hold two forms of the same weight:

- int4 packed for PyTorch's weight-only kernel (group size 32 = one llama.cpp block), taken bit for
  bit from the blocks: fastest when a step has few tokens (decode), where reading weights dominates.
  Q4_0/Q4_1 map onto one int4 matrix. Q8_0 maps exactly onto two: with u = q + 128 = 16 h + l,
  d q = 16 d (h - 8) + [d (l - 8) + 8 d], so two int4 matmuls (scale 16d; scale d, zero 8d) read
  the same bytes as an int8 one but keep the 32-element block scales that PyTorch's per-row int8
  kernel would lose (per-row requantization gave 10x the logit error of bf16 on SmolLM2's embedding).
- dense bf16, on CPU prepacked in oneDNN's layout: faster once a step has enough tokens (prefill,
  large batches), since the int4 kernel's cost grows with them. CPUs without native bf16 matmuls
  (AVX2 only: most laptops) keep this copy in float32 instead, see ``pack_dense``.

Everything else (F16, BF16, K-quants, ...) is dequantized to dense; on CUDA everything is dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from .errors import ModelLoadError

INT4_GROUP = 32  # one Q4_0/Q4_1/Q8_0 block = one PyTorch int4 group

# The int4 kernel's cost grows with the token count (it unpacks weights per row of x) while the
# packed dense bf16 matmul stays bound by reading weights up to a few dozen tokens. Measured on
# SmolLM2-135M, whole decode steps (CPU time, one thread): int4 layers vs dense layers 26.5 vs 35.1 ms
# at 4 tokens, 42.3 vs 44.8 at 8, 58.4 vs 53.3 at 12; the Q8_0 head as two int4 matrices vs dense
# 20.7 vs 21.8 ms at 2 tokens, 27.7 vs 26.5 at 4. Steps up to these many tokens use int4:
INT4_MAX_TOKENS = 8  # one int4 matrix (Q4_0, Q4_1)
INT4_PAIR_MAX_TOKENS = 2  # two (Q8_0)

# oneDNN reads a plain bf16 weight into its blocked layout on every call; packing it once at load
# makes the dense matmul 1.3-2x faster at the sizes a step has (bit-identical results). The layout is
# tuned for this many rows of x but correct for any.
ONEDNN_PACK_ROWS = 32

_int4_mm = torch.ops.aten._weight_int4pack_mm_for_cpu
_int4_pack = torch.ops.aten._convert_weight_to_int4pack_for_cpu
# Builds without oneDNN lack these; their dense weights stay plain.
_onednn_mm = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
_onednn_pack = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)
# oneDNN's bf16 matmul needs AVX512 (BW/VL/DQ) or AVX-NE-CONVERT; elsewhere packing a bf16 weight raises.
NATIVE_BF16_MATMUL = _onednn_pack is not None and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@dataclass
class GGMLWeight:
    """A GGUF tensor still in llama.cpp's block format."""

    data: np.ndarray  # (N, row_bytes) uint8: each row is K // block_size blocks
    qtype: GGMLQuantizationType
    shape: tuple[int, int]  # (N, K) as PyTorch sees the weight (out, in)

    @property
    def is_int4(self) -> bool:
        return self.qtype in (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1)

    @property
    def int4_terms(self) -> int:
        """How many int4 matrices carry this weight exactly (0: it must be dequantized)."""
        return 1 if self.is_int4 else 2 if self.qtype == GGMLQuantizationType.Q8_0 else 0


Weight = torch.Tensor | GGMLWeight


def _blocks(w: GGMLWeight, rows: slice = slice(None)) -> torch.Tensor:
    """(n, K / block_elems, block_bytes) uint8 of the given rows."""
    block_elems, block_bytes = GGML_QUANT_SIZES[w.qtype]
    # np.array copies out of the read-only memory map, which torch.from_numpy needs to be writable.
    data = torch.from_numpy(np.array(w.data[rows], dtype=np.uint8))
    return data.view(data.shape[0], w.shape[1] // block_elems, block_bytes)


def _fp16_field(blocks: torch.Tensor, start: int) -> torch.Tensor:
    return blocks[..., start : start + 2].contiguous().view(torch.float16).float()  # (n, nb, 1)


def int4_parts(w: GGMLWeight, rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_0/Q4_1 -> (q (n, K) uint8 in 0..15, scale (n, K/32) f32, zero (n, K/32) f32) such that
    weight = (q - 8) * scale + zero, which is PyTorch's int4 weight-only convention."""
    return _int4_from_blocks(_blocks(w, rows), w.qtype)


def _int4_from_blocks(
    blocks: torch.Tensor, qtype: GGMLQuantizationType
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d = _fp16_field(blocks, 0)  # blocks (n, nb, 18 or 20)
    if qtype == GGMLQuantizationType.Q4_1:
        zero = _fp16_field(blocks, 2) + 8 * d  # llama.cpp: d * q + m
        qs = blocks[..., 4:]
    else:
        zero = torch.zeros_like(d)  # llama.cpp: d * (q - 8)
        qs = blocks[..., 2:]
    # Elements 0-15 of a block are the low nibbles, 16-31 the high ones.
    q = torch.cat([qs & 0x0F, qs >> 4], dim=-1).reshape(blocks.shape[0], -1)  # (n, K)
    return q, d.squeeze(-1), zero.squeeze(-1)


# The types decoded here in torch (fast, and on rows picked by index); others go through gguf-py.
TORCH_DECODED = (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q8_0)


def decode_blocks(blocks: torch.Tensor, qtype: GGMLQuantizationType) -> torch.Tensor:
    """Rows of Q4_0/Q4_1/Q8_0 blocks (n, nb, block_bytes) uint8 -> (n, K) float32."""
    if qtype == GGMLQuantizationType.Q8_0:  # fp16 d then 32 int8
        return (blocks[..., 2:].contiguous().view(torch.int8).float() * _fp16_field(blocks, 0)).flatten(1)
    q, scale, zero = _int4_from_blocks(blocks, qtype)
    return ((q.view(q.shape[0], -1, INT4_GROUP).float() - 8) * scale[..., None] + zero[..., None]).flatten(1)


def _dequantize_rows(w: GGMLWeight, rows: slice) -> torch.Tensor:  # (n, K) float32
    if w.qtype in TORCH_DECODED:
        return decode_blocks(_blocks(w, rows), w.qtype)
    if w.qtype not in GGML_QUANT_SIZES:
        raise ModelLoadError(f"Unsupported GGUF tensor type {w.qtype!r}.")
    return torch.from_numpy(gguf_dequantize(np.asarray(w.data[rows]), w.qtype)).reshape(-1, w.shape[1])


def dequantize(w: Weight, dtype: torch.dtype) -> torch.Tensor:
    """Any weight as a dense (N, K) tensor of ``dtype``."""
    if isinstance(w, torch.Tensor):
        return w.to(dtype)
    n, k = w.shape
    out = torch.empty(n, k, dtype=dtype)
    # In row chunks, so a large matrix (the embedding table) never exists whole in float32.
    chunk = max(1, (1 << 22) // k)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        out[rows] = _dequantize_rows(w, rows)
    return out


class Embedding:
    """Token ids -> rows of the embedding table.

    On CPU a Q4_0/Q4_1/Q8_0 table stays in its blocks and only the rows looked up are decoded: half
    the memory of bf16 or less, and a tied head keeps its own (packed) copy for the matmul anyway.
    """

    def __init__(self, w: Weight, *, device: torch.device, dtype: torch.dtype) -> None:
        self.dtype = dtype
        keep_blocks = isinstance(w, GGMLWeight) and w.qtype in TORCH_DECODED and device.type == "cpu"
        self.qtype = w.qtype if isinstance(w, GGMLWeight) else None
        self.blocks = _blocks(w) if keep_blocks else None  # (V, nb, block_bytes) uint8
        self.table = None if keep_blocks else dequantize(w, dtype).to(device)  # (V, D)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:  # (T,) -> (T, D)
        if self.table is not None:
            return F.embedding(ids, self.table)
        return decode_blocks(self.blocks.index_select(0, ids), self.qtype).to(self.dtype)


Int4Term = tuple[torch.Tensor, torch.Tensor]  # packed (N, K/2) uint8, scales_and_zeros (K/32, N, 2)


class Linear:
    """y = x @ W.T (+ b), with W as int4 packed, dense, or both (then picked by the step's token count)."""

    def __init__(
        self,
        dense: torch.Tensor | None,
        *,
        int4: list[Int4Term] | None = None,
        bias: torch.Tensor | None = None,
    ) -> None:
        if dense is None and not int4:
            raise ValueError("a Linear needs a dense or an int4 weight")
        self.dense = dense  # (N, K), plain or in oneDNN's layout
        self.onednn = dense is not None and dense.is_mkldnn
        self.int4 = int4[0] if int4 else None
        self.int4_rest = int4[1:] if int4 else []  # Q8_0's second half
        self.bias = bias  # (N,)
        # Steps of more tokens than this use the dense copy (when there is one).
        limit = INT4_MAX_TOKENS if len(int4 or []) == 1 else INT4_PAIR_MAX_TOKENS
        self.max_int4_tokens = limit if dense is not None else 1 << 62

    @property
    def uses_int4(self) -> bool:
        return self.int4 is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (T, K) -> (T, N)
        if self.int4 is not None and x.shape[0] <= self.max_int4_tokens:
            y = _int4_mm(x, self.int4[0], INT4_GROUP, self.int4[1])
            for packed, scales_zeros in self.int4_rest:
                y += _int4_mm(x, packed, INT4_GROUP, scales_zeros)
            return y if self.bias is None else y + self.bias
        if self.onednn:
            return _onednn_mm(x, self.dense, self.bias, "none", [], "")
        if self.dense.dtype != x.dtype:  # a float32 copy on a CPU without native bf16 matmuls
            y = F.linear(x.to(self.dense.dtype), self.dense).to(x.dtype)
            return y if self.bias is None else y + self.bias
        return F.linear(x, self.dense, self.bias)


def pack_dense(w: torch.Tensor) -> torch.Tensor:
    """A bf16 CPU weight in oneDNN's blocked layout where the CPU has native bf16 matmuls; in float32 where
    it has not (AVX2 only), since emulated bf16 matmuls run several times slower than float32 ones there
    (3072x576 weight, AMD EPYC with AVX2: 3.9 vs 0.23 ms at 1 token, 86 vs 9.7 ms at 256 tokens); any
    other weight as is."""
    if w.device.type != "cpu" or w.dtype != torch.bfloat16:
        return w
    return _onednn_pack(w, ONEDNN_PACK_ROWS) if NATIVE_BF16_MATMUL else w.float()


def _int4_parts(w: GGMLWeight) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The int4 matrices whose sum is ``w``: [(q (N, K) uint8 in 0..15, scale, zero (N, K/32) f32)],
    each meaning (q - 8) * scale + zero."""
    if w.is_int4:
        return [int4_parts(w)]
    blocks = _blocks(w)  # Q8_0: (N, nb, 34), fp16 d then 32 int8
    d = _fp16_field(blocks, 0).squeeze(-1)  # (N, nb)
    u = blocks[..., 2:].contiguous().view(torch.int8).to(torch.int16).add_(128).to(torch.uint8)  # (N, nb, 32)
    return [
        ((u >> 4).flatten(1), 16 * d, torch.zeros_like(d)),
        ((u & 0x0F).flatten(1), d, 8 * d),
    ]


def can_pack_int4(parts: list[Weight], device: torch.device) -> bool:
    """Whether PyTorch's CPU int4 kernel can carry these weights exactly (shape rules in the shared notes)."""
    if device.type != "cpu" or not all(isinstance(p, GGMLWeight) and p.int4_terms for p in parts):
        return False
    n = sum(p.shape[0] for p in parts)
    k = parts[0].shape[1]
    same_kind = len({p.int4_terms for p in parts}) == 1  # type: ignore[union-attr]
    return same_kind and n % 16 == 0 and k % INT4_GROUP == 0 and all(p.shape[1] == k for p in parts)


def pack_int4(parts: list[GGMLWeight], dtype: torch.dtype) -> list[Int4Term]:
    """Q4_0/Q4_1/Q8_0 weights fused along N -> their int4 terms, scales in ``dtype`` as the kernel wants."""
    per_part = [_int4_parts(p) for p in parts]
    terms = []
    for term in zip(*per_part, strict=True):
        qs, scales, zeros = zip(*term, strict=True)
        packed = _int4_pack(torch.cat(qs).to(torch.int32), 1)
        scales_zeros = torch.stack([torch.cat(scales), torch.cat(zeros)], dim=-1)  # (N, K/32, 2)
        terms.append((packed, scales_zeros.transpose(0, 1).contiguous().to(dtype)))
    return terms


def build_linear(
    parts: list[Weight],
    *,
    bias: list[torch.Tensor] | None = None,
    device: torch.device,
    dtype: torch.dtype,
    dense: torch.Tensor | None = None,
) -> Linear:
    """Fuse ``parts`` along the output dimension (e.g. q, k, v) into one Linear.

    Q4_0/Q4_1/Q8_0 on CPU are kept as int4, with a dense copy beside them for steps with many tokens;
    everything else becomes dense ``dtype`` on ``device``. ``dense`` shares an existing dense table
    (a tied embedding) instead of making a copy.
    """
    fused_bias = torch.cat([b.to(dtype) for b in bias]).to(device) if bias else None
    emulated_bf16 = dense is not None and dense.device.type == "cpu" and dense.dtype == torch.bfloat16
    if dense is None or (emulated_bf16 and not NATIVE_BF16_MATMUL):  # a shared table too slow to multiply by
        dense = pack_dense(torch.cat([dequantize(p, dtype) for p in parts]).to(device))
    int4 = pack_int4(parts, dtype) if can_pack_int4(parts, device) else None  # type: ignore[arg-type]
    return Linear(dense, int4=int4, bias=fused_bias)
