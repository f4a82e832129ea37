"""The contract between the scheduler and the model runner: one flat, variable-length batch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Batch:
    """One engine step. B sequences contribute T tokens in all, laid end to end.

    The scheduler fills it with plain Python lists; the model runner turns them into tensors.
    For sequence i, its new tokens occupy ``input_ids[start_i : start_i + query_lens[i]]``, they sit
    at absolute positions ``context_lens[i] - query_lens[i] ...  context_lens[i] - 1`` and attend
    to every earlier token of that sequence (cached blocks included) and causally among themselves.
    """

    input_ids: list[int]  # (T,)
    positions: list[int]  # (T,) absolute position of each token in its sequence
    query_lens: list[int]  # (B,) new tokens of each sequence in this step (1 for a decode)
    context_lens: list[int]  # (B,) tokens in the KV cache for each sequence after this step
    block_tables: list[list[int]]  # (B, n_blocks_i) physical block ids, in order
    slot_mapping: list[int]  # (T,) where each new token's K/V is stored: block_id * block_size + offset

    @property
    def num_seqs(self) -> int:
        return len(self.query_lens)

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)
