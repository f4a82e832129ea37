"""ModelRunner: loads a checkpoint, owns the paged KV cache, runs one Batch and returns its logits."""

from __future__ import annotations

import ctypes
import os
from itertools import accumulate
from pathlib import Path

import torch

from .batch import Batch
from .config import ModelConfig
from .errors import ModelLoadError
from .loader import load_checkpoint
from .model import AttentionMetadata, Transformer

DEFAULT_CACHE_TOKENS = 64 * 2048  # 64 sequences of 2048 tokens
# On CPU the cache lives in the same RAM as everything else: 192 MiB (8.7k tokens of SmolLM2-135M) keeps
# the default model's serving process (torch 270 MiB, weights 380 MiB, tokenizer, activations) under 1 GiB.
DEFAULT_CPU_CACHE_BYTES = 192 << 20
# On CUDA, the share of the memory still free after the weights that the cache may take by default.
DEFAULT_CUDA_CACHE_FRACTION = 0.5


class ModelRunner:
    def __init__(
        self,
        model: Transformer,
        *,
        num_kv_blocks: int,
        block_size: int,
    ) -> None:
        self.model = model
        self.config: ModelConfig = model.config
        self.device = model.device
        self.dtype = model.dtype
        self.block_size = block_size
        self.num_kv_blocks = num_kv_blocks
        self.max_context = min(self.config.max_position_embeddings, num_kv_blocks * block_size)
        model.set_max_context(self.max_context)
        c = self.config
        shape = (c.num_layers, num_kv_blocks, block_size, c.num_kv_heads, c.head_dim)
        self.k_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)  # (L, NB, BS, KVH, hd)
        self.v_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self._k_layers = list(self.k_cache.unbind(0))  # per layer (NB, BS, KVH, hd), contiguous views
        self._v_layers = list(self.v_cache.unbind(0))
        self._empty = {dt: torch.empty(0, dtype=dt, device=self.device) for dt in (torch.int32, torch.int64)}

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        device: str = "cpu",
        num_kv_blocks: int | None = None,
        block_size: int = 16,
        kv_cache_bytes: int | None = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> ModelRunner:
        """Load ``path`` (a .gguf file or HF folder) onto ``device`` and allocate the KV cache.

        The cache holds ``num_kv_blocks`` blocks of ``block_size`` tokens; without it, as many as fit in
        ``kv_cache_bytes``; without either, a default sized for the device (see the constants above).
        ``dtype`` is the activation and cache dtype: bf16 is the fast one on CPU; float32 exists for tests.
        """
        dev = torch.device(device)
        if dev.type == "cpu":
            # OpenMP threads beyond the cores this process may use only fight each other.
            torch.set_num_threads(len(os.sched_getaffinity(0)))
        config, weights = load_checkpoint(Path(path))
        with torch.inference_mode():
            model = Transformer(config, weights, device=dev, dtype=dtype)
        del weights  # drops the GGUF memory map and any tensor the model did not take
        _return_freed_memory()
        bytes_per_block = cache_bytes_per_block(config, block_size, dtype)
        if num_kv_blocks is None and kv_cache_bytes is None:
            kv_cache_bytes = _default_cache_bytes(config, block_size, dtype, dev)
        if num_kv_blocks is None:
            num_kv_blocks = kv_cache_bytes // bytes_per_block
        if num_kv_blocks < 1:
            raise ModelLoadError(
                f"The KV cache must hold at least one block ({bytes_per_block} bytes for this model); "
                f"got {kv_cache_bytes} bytes."
            )
        return cls(model, num_kv_blocks=num_kv_blocks, block_size=block_size)

    @torch.inference_mode()
    def execute(self, batch: Batch) -> torch.Tensor:
        """Run one step: float32 logits (B, vocab) of each sequence's last scheduled token, in batch order."""
        input_ids, meta, restore = self._prepare(batch)
        logits = self.model.forward(input_ids, meta, self._k_layers, self._v_layers)
        return logits if restore is None else logits.index_select(0, restore)

    def _prepare(self, batch: Batch) -> tuple[torch.Tensor, AttentionMetadata, torch.Tensor | None]:
        """Batch lists -> tensors, with decode sequences (one token) moved in front of prefill chunks."""
        qlens, ctx, tables = batch.query_lens, batch.context_lens, batch.block_tables
        ids, positions, slots = batch.input_ids, batch.positions, batch.slot_mapping
        nd = qlens.count(1)
        restore = None
        if qlens[:nd].count(1) != nd:  # the scheduler normally puts decodes first already
            order = sorted(range(len(qlens)), key=lambda i: qlens[i] != 1)  # stable
            starts = [0, *accumulate(qlens)]
            spans = [(starts[i], starts[i + 1]) for i in order]
            ids = [t for a, b in spans for t in ids[a:b]]
            positions = [t for a, b in spans for t in positions[a:b]]
            slots = [t for a, b in spans for t in slots[a:b]]
            qlens, ctx, tables = [qlens[i] for i in order], [ctx[i] for i in order], [tables[i] for i in order]
            restore = self._tensor(sorted(range(len(order)), key=order.__getitem__), torch.int64)
        meta = AttentionMetadata(
            positions=self._tensor(positions, torch.int64),
            slot_mapping=self._tensor(slots, torch.int64),
            num_decodes=nd,
            decode_block_tables=self._block_table(tables[:nd]),
            decode_context_lens=self._tensor(ctx[:nd], torch.int32),
            prefill_block_tables=self._block_table(tables[nd:]),
            prefill_query_lens=self._tensor(qlens[nd:], torch.int32),
            prefill_context_lens=self._tensor(ctx[nd:], torch.int32),
            logit_indices=self._tensor([end - 1 for end in accumulate(qlens)], torch.int64),
        )
        return self._tensor(ids, torch.int64), meta, restore

    def _tensor(self, values: list[int], dtype: torch.dtype) -> torch.Tensor:
        if not values:
            return self._empty[dtype]
        t = torch.tensor(values, dtype=dtype)
        return t if self.device.type == "cpu" else t.to(self.device, non_blocking=True)

    def _block_table(self, tables: list[list[int]]) -> torch.Tensor:  # (B, maxb) int32, -1 padded
        width = max((len(t) for t in tables), default=0)
        return self._tensor([t + [-1] * (width - len(t)) for t in tables], torch.int32).view(len(tables), width)


def cache_bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """K and V of every layer for ``block_size`` tokens."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim * itemsize


def _default_cache_bytes(config: ModelConfig, block_size: int, dtype: torch.dtype, device: torch.device) -> int:
    wanted = DEFAULT_CACHE_TOKENS // block_size * cache_bytes_per_block(config, block_size, dtype)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)  # the weights are already on the device
        return min(wanted, int(free * DEFAULT_CUDA_CACHE_FRACTION))
    return min(wanted, DEFAULT_CPU_CACHE_BYTES)


def _return_freed_memory() -> None:
    """Hand the loader's freed scratch memory back to the OS before the cache is allocated.

    glibc keeps freed heap pages (tens of MB after a load, counted in RSS) unless asked; other C
    libraries have no such call and need none.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return
