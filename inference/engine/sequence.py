"""One request's tokens and its place in the KV cache, as the scheduler and block manager see it."""

from __future__ import annotations

import itertools
from enum import Enum

import torch

from .sampling import PenaltyState, SamplingParams

_arrival = itertools.count()


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """Prompt plus generated tokens of one request.

    ``num_computed_tokens`` counts the tokens whose K/V sit in the cache (cached prefix blocks
    included). The tokens from there to the end are what the next step has to compute: one for a
    decode, a chunk of the prompt during prefill, or everything again after a preemption.
    """

    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        self.request_id = request_id
        self.arrival = next(_arrival)  # a total order: lower is older, preemption takes the highest
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        # Chain state of the prefix cache: how many of this sequence's blocks have been hashed, and the
        # hash of the last one (the parent of the next).
        self.num_hashed_blocks = 0
        self.last_block_hash: int | None = None
        # Prompt tokens found in the prefix cache the first time the sequence was scheduled (for usage).
        self.num_cached_prompt_tokens: int | None = None
        self.finish_reason: str | None = None
        # Built by the sampler on the logits' device when the request has a seed.
        self.generator: torch.Generator | None = None
        # Seen tokens and output counts for penalties (sampling.PenaltyState), built on first use.
        self.penalty_state: PenaltyState | None = None

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def __repr__(self) -> str:
        return (
            f"Sequence({self.request_id!r}, {self.status.value}, tokens={len(self)}, "
            f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})"
        )
