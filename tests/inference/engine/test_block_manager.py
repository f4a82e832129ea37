from __future__ import annotations

from inference.engine.block_manager import BlockManager
from inference.engine.sampling import SamplingParams
from inference.engine.sequence import Sequence

BLOCK = 4


def seq_of(tokens: list[int], name: str = "r") -> Sequence:
    return Sequence(name, tokens, SamplingParams())


def computed(manager: BlockManager, tokens: list[int], name: str = "r") -> Sequence:
    """A sequence placed in the cache with all its tokens computed, as after a prefill step."""
    seq = seq_of(tokens, name)
    manager.attach_cached_prefix(seq)
    manager.reserve(seq, seq.num_uncomputed_tokens)
    seq.num_computed_tokens = len(seq)
    manager.commit(seq)
    return seq


def test_reserve_takes_just_enough_blocks_and_release_gives_them_all_back() -> None:
    manager = BlockManager(num_blocks=8, block_size=BLOCK)
    seq = seq_of(list(range(9)))

    manager.reserve(seq, 9)
    used = manager.num_used_blocks
    manager.release(seq)

    assert used == 3
    assert manager.num_free_blocks == 8
    assert seq.block_table == []


def test_a_shared_prefix_reuses_the_computed_full_blocks() -> None:
    manager = BlockManager(num_blocks=8, block_size=BLOCK)
    first = computed(manager, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    second = seq_of([1, 2, 3, 4, 5, 6, 7, 8, 42, 43, 44])

    reused = manager.attach_cached_prefix(second)

    assert reused == 8
    assert second.block_table == first.block_table[:2]
    assert second.num_computed_tokens == 8


def test_the_last_prompt_token_is_always_recomputed() -> None:
    manager = BlockManager(num_blocks=8, block_size=BLOCK)
    computed(manager, [1, 2, 3, 4, 5, 6, 7, 8])
    again = seq_of([1, 2, 3, 4, 5, 6, 7, 8])

    reused = manager.attach_cached_prefix(again)

    assert reused == 4
    assert again.num_uncomputed_tokens == 4


def test_the_same_block_after_a_different_prefix_is_not_a_hit() -> None:
    manager = BlockManager(num_blocks=8, block_size=BLOCK)
    computed(manager, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    other = seq_of([0, 2, 3, 4, 5, 6, 7, 8, 9])

    reused = manager.attach_cached_prefix(other)

    assert reused == 0


def test_a_shared_block_stays_in_use_until_its_last_sequence_releases_it() -> None:
    manager = BlockManager(num_blocks=8, block_size=BLOCK)
    first = computed(manager, [1, 2, 3, 4, 5])
    second = seq_of([1, 2, 3, 4, 6])
    manager.attach_cached_prefix(second)
    shared = first.block_table[0]

    manager.release(first)

    assert manager.blocks[shared].ref_count == 1
    assert manager.num_used_blocks == 1


def test_released_blocks_stay_cached_until_evicted() -> None:
    manager = BlockManager(num_blocks=4, block_size=BLOCK)
    manager.release(computed(manager, [1, 2, 3, 4, 5]))
    later = seq_of([1, 2, 3, 4, 9])

    reused = manager.attach_cached_prefix(later)

    assert reused == 4


def test_eviction_takes_uncached_blocks_first_then_the_least_recently_used() -> None:
    manager = BlockManager(num_blocks=4, block_size=BLOCK)
    manager.release(computed(manager, [1, 2, 3, 4, 5], "old"))  # one cached block + one empty
    manager.release(computed(manager, [6, 7, 8, 9, 10], "new"))  # one cached block + one empty
    filler = seq_of(list(range(100, 112)))

    manager.reserve(filler, 12)  # three of the four blocks: both empties, then the older cached one

    assert manager.attach_cached_prefix(seq_of([1, 2, 3, 4, 0])) == 0
    assert manager.attach_cached_prefix(seq_of([6, 7, 8, 9, 0])) == 4


def test_tokens_that_fit_counts_room_in_own_and_free_blocks() -> None:
    manager = BlockManager(num_blocks=3, block_size=BLOCK)
    seq = seq_of(list(range(20)))
    manager.reserve(seq, 2)
    seq.num_computed_tokens = 2

    fit = manager.tokens_that_fit(seq, 20)

    assert fit == 10


def test_decode_blocks_join_the_cache_once_full() -> None:
    manager = BlockManager(num_blocks=8, block_size=BLOCK)
    seq = computed(manager, [1, 2, 3])
    for token in (4, 5, 6):
        seq.token_ids.append(token)
        manager.reserve(seq, 1)
        seq.num_computed_tokens += 1
        manager.commit(seq)

    reused = manager.attach_cached_prefix(seq_of([1, 2, 3, 4, 5, 6]))

    assert seq.num_hashed_blocks == 1
    assert reused == 4
