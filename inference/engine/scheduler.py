"""Continuous batching: which tokens of which sequences the next model step computes.

Each step: running decodes first (one token each, oldest first), then running prefills continue, then
waiting sequences join, all inside a token budget, so a long prompt is prefilled in chunks while other
sequences keep decoding. When the KV cache is full, the newest running sequence is preempted: its
blocks go back (their cached prefix usually survives) and it is recomputed when it returns.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

from .batch import Batch
from .block_manager import BlockManager
from .sequence import Sequence, SequenceStatus


@dataclass
class ScheduledBatch:
    batch: Batch
    seqs: list[Sequence]  # row i of the batch
    num_new_tokens: list[int]  # tokens computed for seqs[i] in this step


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        eos_token_ids: list[int],
    ) -> None:
        if max_num_batched_tokens < max_num_seqs:
            raise ValueError("max_num_batched_tokens must be at least max_num_seqs, so every decode fits a step")
        if max_model_len > block_manager.num_blocks * block_manager.block_size:
            raise ValueError("max_model_len is larger than the whole KV cache")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.eos_token_ids = frozenset(eos_token_ids)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # kept in arrival order, oldest first
        self._by_id: dict[str, Sequence] = {}
        self.num_preemptions = 0
        self.prompt_tokens_total = 0  # over sequences scheduled at least once
        self.cached_prompt_tokens_total = 0

    # -- requests in and out ------------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        self._by_id[seq.request_id] = seq
        self.waiting.append(seq)

    def get(self, request_id: str) -> Sequence | None:
        return self._by_id.get(request_id)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence, reason: str) -> None:
        """End the sequence (stop, length, abort, error) and give its blocks back."""
        if seq.is_finished:
            return
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self.block_manager.release(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        del self._by_id[seq.request_id]

    # -- one step -------------------------------------------------------------------------------

    def schedule(self) -> ScheduledBatch | None:
        """Pick this step's work and reserve its KV slots. None when nothing can run."""
        budget = self.max_num_batched_tokens
        picked: list[tuple[Sequence, int]] = []
        in_step: set[int] = set()  # arrival numbers of picked sequences: preemption must spare them
        decodes = [s for s in self.running if s.num_uncomputed_tokens == 1]
        prefills = [s for s in self.running if s.num_uncomputed_tokens > 1]
        for seq in decodes + prefills:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted a moment ago to make room for an older one
            count = self._make_room(seq, min(seq.num_uncomputed_tokens, budget), in_step)
            if count:
                picked.append((seq, count))
                in_step.add(seq.arrival)
                budget -= count
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            count = self._admit(seq, budget)
            if not count:
                break
            picked.append((seq, count))
            in_step.add(seq.arrival)
            budget -= count
        if not picked:
            return None
        return self._build(picked)

    def on_executed(self, scheduled: ScheduledBatch) -> list[int]:
        """Record that the step ran; return the batch rows whose logits are sampled.

        A sequence whose prompt is still mid-chunk has no next token yet, so its row is skipped.
        """
        rows = []
        for i, (seq, count) in enumerate(zip(scheduled.seqs, scheduled.num_new_tokens, strict=True)):
            seq.num_computed_tokens += count
            self.block_manager.commit(seq)
            if seq.num_computed_tokens == len(seq):
                rows.append(i)
        return rows

    def append_token(self, seq: Sequence, token_id: int) -> str | None:
        """Add a sampled token; return "stop" or "length" when it ends the sequence (the caller finishes it)."""
        seq.token_ids.append(token_id)
        params = seq.params
        if (token_id in self.eos_token_ids and not params.ignore_eos) or token_id in params.stop_token_ids:
            return "stop"
        if params.max_tokens is not None and seq.num_output_tokens >= params.max_tokens:
            return "length"
        if len(seq) >= self.max_model_len:
            return "length"
        return None

    # -- internals ------------------------------------------------------------------------------

    def _make_room(self, seq: Sequence, wanted: int, in_step: set[int]) -> int:
        """Reserve KV slots for up to ``wanted`` tokens of a running sequence, preempting newer ones if
        needed. A prefill may get fewer tokens than it wanted; 0 means ``seq`` itself was preempted."""
        manager = self.block_manager
        while True:
            count = manager.tokens_that_fit(seq, wanted)
            if count == wanted or (count > 0 and seq.num_uncomputed_tokens > 1):
                manager.reserve(seq, count)
                return count
            victim = next((s for s in reversed(self.running) if s is not seq and s.arrival not in in_step), None)
            if victim is None or victim.arrival < seq.arrival:
                self._preempt(seq)
                return 0
            self._preempt(victim)

    def _admit(self, seq: Sequence, budget: int) -> int:
        """Start (or restart) the waiting sequence at the front if its first chunk fits; return that chunk."""
        manager = self.block_manager
        cached = manager.attach_cached_prefix(seq)
        wanted = min(seq.num_uncomputed_tokens, budget)
        if manager.tokens_that_fit(seq, wanted) < wanted:
            # New work never pushes out running work; give back the cached blocks it picked up meanwhile.
            manager.release(seq)
            return 0
        manager.reserve(seq, wanted)
        if seq.num_cached_prompt_tokens is None:
            seq.num_cached_prompt_tokens = min(cached, seq.num_prompt_tokens)
            self.prompt_tokens_total += seq.num_prompt_tokens
            self.cached_prompt_tokens_total += seq.num_cached_prompt_tokens
        self.waiting.popleft()
        seq.status = SequenceStatus.RUNNING
        bisect.insort(self.running, seq, key=lambda s: s.arrival)
        return wanted

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.release(seq)
        seq.status = SequenceStatus.WAITING
        # It is older than anything that never ran, so it goes back in front.
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _build(self, picked: list[tuple[Sequence, int]]) -> ScheduledBatch:
        size = self.block_manager.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        for seq, count in picked:
            start = seq.num_computed_tokens
            end = start + count
            table = seq.block_table
            input_ids += seq.token_ids[start:end]
            positions += range(start, end)
            slot_mapping += [table[p // size] * size + p % size for p in range(start, end)]
        batch = Batch(
            input_ids=input_ids,
            positions=positions,
            query_lens=[count for _, count in picked],
            context_lens=[seq.num_computed_tokens + count for seq, count in picked],
            block_tables=[seq.block_table for seq, _ in picked],
            slot_mapping=slot_mapping,
        )
        return ScheduledBatch(batch=batch, seqs=[s for s, _ in picked], num_new_tokens=[c for _, c in picked])
