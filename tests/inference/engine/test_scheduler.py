"""The scheduler driven without a model: a stand-in "model" (test only) stores each token in the slot the
batch names and computes the next token from the context it reads back through the block table, so any
mistake in block tables, slots, positions or the prefix cache changes the outputs."""

from __future__ import annotations

import random

from inference.engine.batch import Batch
from inference.engine.block_manager import BlockManager
from inference.engine.sampling import SamplingParams
from inference.engine.scheduler import Scheduler
from inference.engine.sequence import Sequence

VOCAB = 1000
EOS = 0
BLOCK = 4


def next_token(context: list[int]) -> int:
    """Deterministic stand-in for the model's argmax; never EOS."""
    return 1 + sum((i + 1) * t for i, t in enumerate(context)) % (VOCAB - 1)


class PagedEcho:
    def __init__(self, num_blocks: int) -> None:
        self.slots: list[tuple[int, int] | None] = [None] * (num_blocks * BLOCK)
        self.batches: list[Batch] = []

    def execute(self, batch: Batch) -> list[int]:
        self.batches.append(batch)
        for token, position, slot in zip(batch.input_ids, batch.positions, batch.slot_mapping, strict=True):
            self.slots[slot] = (token, position)
        out = []
        for table, context_len in zip(batch.block_tables, batch.context_lens, strict=True):
            cells = [self.slots[table[p // BLOCK] * BLOCK + p % BLOCK] for p in range(context_len)]
            assert [c[1] for c in cells] == list(range(context_len)), "a slot holds the wrong position"
            out.append(next_token([c[0] for c in cells]))
        return out


def reference(prompt: list[int], max_tokens: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(max_tokens):
        tokens.append(next_token(tokens))
    return tokens[len(prompt) :]


def make_scheduler(num_blocks: int, *, max_num_seqs: int = 8, budget: int = 32) -> Scheduler:
    return Scheduler(
        BlockManager(num_blocks, BLOCK),
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=budget,
        max_model_len=num_blocks * BLOCK,
        eos_token_ids=[EOS],
    )


def run_step(scheduler: Scheduler, model: PagedEcho) -> list[Sequence]:
    """One engine step with the stand-in model; returns the sequences that finished."""
    scheduled = scheduler.schedule()
    assert scheduled is not None
    next_tokens = model.execute(scheduled.batch)
    finished = []
    for row in scheduler.on_executed(scheduled):
        seq = scheduled.seqs[row]
        reason = scheduler.append_token(seq, next_tokens[row])
        if reason:
            scheduler.finish(seq, reason)
            finished.append(seq)
    return finished


def run_all(scheduler: Scheduler, model: PagedEcho) -> list[Sequence]:
    finished = []
    while scheduler.has_unfinished():
        finished += run_step(scheduler, model)
    return finished


def submit(scheduler: Scheduler, name: str, prompt: list[int], max_tokens: int, **params: object) -> Sequence:
    seq = Sequence(name, prompt, SamplingParams(max_tokens=max_tokens, **params))
    scheduler.add(seq)
    return seq


def test_many_sequences_in_a_tight_cache_all_finish_with_correct_outputs_and_no_leaks() -> None:
    rng = random.Random(0)
    scheduler = make_scheduler(num_blocks=24, max_num_seqs=6, budget=16)
    model = PagedEcho(24)
    shared = [rng.randrange(1, VOCAB) for _ in range(9)]
    seqs = [
        submit(scheduler, f"r{i}", shared + [rng.randrange(1, VOCAB) for _ in range(rng.randrange(1, 20))], 30)
        for i in range(20)
    ]

    finished = run_all(scheduler, model)

    assert sorted(s.request_id for s in finished) == sorted(s.request_id for s in seqs)
    assert all(s.output_token_ids == reference(s.token_ids[: s.num_prompt_tokens], 30) for s in seqs)
    assert all(s.finish_reason == "length" for s in seqs)
    assert scheduler.num_preemptions > 0
    assert scheduler.block_manager.num_used_blocks == 0


def test_a_step_never_exceeds_the_token_budget_or_the_sequence_limit() -> None:
    rng = random.Random(1)
    scheduler = make_scheduler(num_blocks=200, max_num_seqs=3, budget=10)
    model = PagedEcho(200)
    for i in range(6):
        submit(scheduler, f"r{i}", [rng.randrange(1, VOCAB) for _ in range(25)], 5)

    run_all(scheduler, model)

    assert max(b.num_tokens for b in model.batches) == 10
    assert max(b.num_seqs for b in model.batches) == 3


def test_decodes_go_first_and_a_long_prompt_is_prefilled_in_chunks_beside_them() -> None:
    scheduler = make_scheduler(num_blocks=100, budget=8)
    model = PagedEcho(100)
    short = submit(scheduler, "short", [5, 6, 7], 20)
    run_step(scheduler, model)
    long = submit(scheduler, "long", list(range(1, 31)), 2)

    first_step = len(model.batches)
    while long.num_output_tokens == 0:
        run_step(scheduler, model)
    chunks = model.batches[first_step:]

    assert [b.query_lens for b in chunks] == [[1, 7], [1, 7], [1, 7], [1, 7], [1, 2]]
    assert [len(b.block_tables) for b in chunks] == [2] * 5
    assert short.num_output_tokens == 6
    assert long.output_token_ids == reference(list(range(1, 31)), 1)


def test_a_repeated_prefix_is_served_from_the_cache_and_counted() -> None:
    scheduler = make_scheduler(num_blocks=50)
    model = PagedEcho(50)
    prompt = list(range(1, 15))
    first = submit(scheduler, "first", prompt, 3)
    run_all(scheduler, model)
    second = submit(scheduler, "second", prompt + first.output_token_ids + [77, 78], 3)

    run_all(scheduler, model)

    assert first.num_cached_prompt_tokens == 0
    assert second.num_cached_prompt_tokens == 16
    assert second.output_token_ids == reference(second.token_ids[: second.num_prompt_tokens], 3)
    assert scheduler.cached_prompt_tokens_total == 16
    assert scheduler.prompt_tokens_total == 14 + 19


def test_finishing_a_sequence_mid_prefill_frees_its_blocks() -> None:
    scheduler = make_scheduler(num_blocks=50, budget=8)
    model = PagedEcho(50)
    seq = submit(scheduler, "r", list(range(1, 40)), 5)
    run_step(scheduler, model)

    scheduler.finish(seq, "abort")

    assert seq.finish_reason == "abort"
    assert not scheduler.has_unfinished()
    assert scheduler.block_manager.num_used_blocks == 0


def test_eos_stops_unless_ignored_and_max_tokens_ends_with_length() -> None:
    scheduler = make_scheduler(num_blocks=50)
    stops = submit(scheduler, "stops", [1, 2], 10)
    ignores = submit(scheduler, "ignores", [1, 2], 3, ignore_eos=True)
    by_stop_id = submit(scheduler, "by_stop_id", [1, 2], 10, stop_token_ids=[42])
    scheduler.on_executed(scheduler.schedule())  # one prefill step for all three

    reasons = [
        scheduler.append_token(stops, EOS),
        scheduler.append_token(ignores, EOS),
        scheduler.append_token(by_stop_id, 42),
        scheduler.append_token(ignores, 5),
        scheduler.append_token(ignores, 6),
    ]

    assert reasons == ["stop", None, "stop", None, "length"]


def test_a_sequence_ends_with_length_at_the_context_limit() -> None:
    scheduler = make_scheduler(num_blocks=3)
    model = PagedEcho(3)
    seq = submit(scheduler, "r", list(range(1, 8)), 100)

    run_all(scheduler, model)

    assert seq.finish_reason == "length"
    assert len(seq) == 12
