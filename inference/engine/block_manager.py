"""The paged KV cache's bookkeeping: which physical blocks each sequence owns, and the prefix cache.

A block holds ``block_size`` consecutive tokens of one sequence. Once a block is full and its K/V
computed, it is registered under a chained hash (hash of the parent block's hash and this block's
token ids), so the hash names the whole prefix up to and including the block. A new sequence whose
prompt starts with the same tokens (system prompt, earlier turns of a chat) picks those blocks up
instead of recomputing them. Blocks are shared by reference count; a block whose count drops to zero
keeps its contents and its hash and waits in the free list, least recently used first, until a
fresh allocation evicts it.
"""

from __future__ import annotations

from collections import OrderedDict

from .sequence import Sequence


class Block:
    __slots__ = ("block_id", "hash", "parent_hash", "ref_count", "token_ids")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None  # set once the block is full and computed
        self.parent_hash: int | None = None
        self.token_ids: tuple[int, ...] = ()  # kept to confirm a hash hit (a hash alone could collide)

    def forget(self) -> None:
        self.hash = None
        self.parent_hash = None
        self.token_ids = ()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of at least one token, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        # Blocks nobody references, in eviction order: the front goes first. Cached blocks join at the back.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._cached: dict[int, int] = {}  # block hash -> block id

    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be handed out now, cached-but-unreferenced ones included."""
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._cached)

    def attach_cached_prefix(self, seq: Sequence) -> int:
        """Give an unplaced sequence the cached blocks of its longest cached prefix; return the tokens reused.

        Only full blocks before the last token are looked up, so at least that token is computed again
        and the step has logits to sample from.
        """
        assert not seq.block_table, "the sequence already holds blocks"
        size = self.block_size
        parent: int | None = None
        for start in range(0, (len(seq) - 1) // size * size, size):
            tokens = tuple(seq.token_ids[start : start + size])
            block_hash = hash((parent, tokens))
            block_id = self._cached.get(block_hash)
            if block_id is None:
                break
            block = self.blocks[block_id]
            if block.token_ids != tokens or block.parent_hash != parent:
                break
            if block.ref_count == 0:
                del self._free[block_id]
            block.ref_count += 1
            seq.block_table.append(block_id)
            parent = block_hash
        seq.num_hashed_blocks = len(seq.block_table)
        seq.last_block_hash = parent
        seq.num_computed_tokens = len(seq.block_table) * size
        return seq.num_computed_tokens

    def tokens_that_fit(self, seq: Sequence, num_new_tokens: int) -> int:
        """How many of the sequence's next ``num_new_tokens`` tokens its blocks plus the free ones can hold."""
        room = (len(seq.block_table) + len(self._free)) * self.block_size - seq.num_computed_tokens
        return max(0, min(num_new_tokens, room))

    def reserve(self, seq: Sequence, num_new_tokens: int) -> None:
        """Add blocks so the sequence can store K/V for its next ``num_new_tokens`` tokens.

        Precondition: ``tokens_that_fit(seq, num_new_tokens) == num_new_tokens``.
        """
        total = seq.num_computed_tokens + num_new_tokens
        needed = -(-total // self.block_size) - len(seq.block_table)
        assert needed <= len(self._free), "reserve() beyond tokens_that_fit()"
        for _ in range(needed):
            seq.block_table.append(self._take_free_block())

    def commit(self, seq: Sequence) -> None:
        """Register the sequence's newly full blocks in the prefix cache. Call after their K/V is computed."""
        size = self.block_size
        while (seq.num_hashed_blocks + 1) * size <= seq.num_computed_tokens:
            start = seq.num_hashed_blocks * size
            tokens = tuple(seq.token_ids[start : start + size])
            block_hash = hash((seq.last_block_hash, tokens))
            block = self.blocks[seq.block_table[seq.num_hashed_blocks]]
            if block.hash is None:
                block.hash = block_hash
                block.parent_hash = seq.last_block_hash
                block.token_ids = tokens
                # A twin computed at the same time may have been registered first; keep that one.
                self._cached.setdefault(block_hash, block.block_id)
            seq.num_hashed_blocks += 1
            seq.last_block_hash = block_hash

    def release(self, seq: Sequence) -> None:
        """Drop the sequence's references; it then holds no blocks and has nothing computed."""
        # Tail first, so a prefix's head block is the last of it to be evicted.
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count > 0:
                continue
            self._free[block_id] = None
            if block.hash is None or self._cached.get(block.hash) != block_id:
                # Nothing anyone could look up: hand it out before any cached block.
                block.forget()
                self._free.move_to_end(block_id, last=False)
        seq.block_table = []
        seq.num_computed_tokens = 0
        seq.num_hashed_blocks = 0
        seq.last_block_hash = None

    def _take_free_block(self) -> int:
        block_id, _ = self._free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None:
            if self._cached.get(block.hash) == block_id:
                del self._cached[block.hash]
            block.forget()
        block.ref_count = 1
        return block_id
