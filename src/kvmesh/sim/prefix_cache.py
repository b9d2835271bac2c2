"""The simulated engine's own prefix cache: an LRU of KV blocks, bounded in tokens.

It mirrors vLLM's automatic prefix caching: the engine caches KV per small
block (16 tokens by default, vLLM's block size), so a baseline engine reuses
short shared prefixes too. The fleet, however, names KV by 256-token *chunks*
(:mod:`kvmesh.common.hashing`), and KV events carry chunk hashes. So each
chunk's last block carries the chunk's chain hash: admitting that block admits
the chunk; evicting any block of a chunk evicts the chunk.

Both block and chunk hashes come from the one hash chain in
``kvmesh.common.hashing`` (with chunk_size = block size for the blocks).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class CacheChange:
    """Chunks whose ENGINE-tier residency changed during one insert."""

    admitted: list[bytes] = field(default_factory=list)
    """Chain hashes of chunks that became fully cached."""
    evicted: list[bytes] = field(default_factory=list)
    """Chain hashes of chunks that lost a block."""


class EnginePrefixCache:
    """LRU over block hashes; capacity in blocks.

    ``block_index`` is the block's position in its prompt, needed to map it to
    its chunk (``block_index // blocks_per_chunk``).
    """

    def __init__(self, capacity_tokens: int, block_size: int, chunk_size: int) -> None:
        if block_size < 1 or chunk_size < 1 or chunk_size % block_size:
            raise ValueError(f"chunk_size ({chunk_size}) must be a multiple of block_size ({block_size})")
        if capacity_tokens < block_size:
            raise ValueError(f"capacity_tokens must be >= block_size ({block_size}), got {capacity_tokens}")
        self.block_size = block_size
        self.blocks_per_chunk = chunk_size // block_size
        self.capacity_blocks = capacity_tokens // block_size
        # block hash -> chunk hash (for every block of a chunk, so any eviction reports it)
        self._blocks: OrderedDict[bytes, bytes | None] = OrderedDict()
        self._chunk_blocks: dict[bytes, int] = {}
        """Chunk hash -> how many of its blocks are resident (== blocks_per_chunk when admitted)."""

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def cached_tokens(self) -> int:
        """Tokens of KV currently held."""
        return len(self._blocks) * self.block_size

    def match(self, block_hashes: Sequence[bytes]) -> int:
        """Length, in blocks, of the cached prefix of ``block_hashes``; touches the hits."""
        count = 0
        for h in block_hashes:
            if h not in self._blocks:
                break
            self._blocks.move_to_end(h)
            count += 1
        return count

    def insert(self, block_hashes: Sequence[bytes], chunk_hashes: Sequence[bytes]) -> CacheChange:
        """Cache every block of a computed prompt, evicting the least recently used.

        ``chunk_hashes[i]`` is the chain hash of chunk ``i``; blocks past the last
        full chunk map to no chunk (their chunk is partial and never announced).
        """
        change = CacheChange()
        for index, h in enumerate(block_hashes):
            if h in self._blocks:
                self._blocks.move_to_end(h)
                continue
            chunk_index = index // self.blocks_per_chunk
            chunk = chunk_hashes[chunk_index] if chunk_index < len(chunk_hashes) else None
            self._make_room(change)
            self._blocks[h] = chunk
            if chunk is not None:
                resident = self._chunk_blocks.get(chunk, 0) + 1
                self._chunk_blocks[chunk] = resident
                if resident == self.blocks_per_chunk:
                    change.admitted.append(chunk)
        return change

    def clear(self) -> list[bytes]:
        """Drop everything; returns the chunks that were fully cached."""
        full = [c for c, n in self._chunk_blocks.items() if n == self.blocks_per_chunk]
        self._blocks.clear()
        self._chunk_blocks.clear()
        return full

    def _make_room(self, change: CacheChange) -> None:
        while len(self._blocks) >= self.capacity_blocks:
            _, chunk = self._blocks.popitem(last=False)
            if chunk is None:
                continue
            resident = self._chunk_blocks[chunk]
            if resident == self.blocks_per_chunk:
                change.evicted.append(chunk)
            if resident == 1:
                del self._chunk_blocks[chunk]
            else:
                self._chunk_blocks[chunk] = resident - 1
