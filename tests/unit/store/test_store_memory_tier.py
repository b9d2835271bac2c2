from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmesh.store.memory_tier import MemEntry, MemoryTier
from kvmesh.store.shm import ShmArena

KiB = 1024


def key(i: int) -> bytes:
    return i.to_bytes(16, "big")


@pytest.fixture
def arena(tmp_path: Path) -> Iterator[ShmArena]:
    arena = ShmArena(tmp_path, 4 * KiB)  # room for exactly four 1 KiB values
    yield arena
    arena.close()


def put(tier: MemoryTier, i: int, size: int = KiB) -> MemEntry | None:
    entry = tier.reserve(key(i), size)
    if entry is not None:
        tier.view(entry)[:] = bytes([i]) * size
        tier.commit(entry)
    return entry


def test_lru_eviction_order_and_hook(arena: ShmArena) -> None:
    evicted: list[tuple[bytes, bytes]] = []
    tier = MemoryTier(arena, on_evict=lambda e, data: evicted.append((e.key, bytes(data[:2]))))
    for i in range(4):
        put(tier, i)
    assert tier.get(key(0)) is not None  # 0 becomes most recently used
    put(tier, 4)
    put(tier, 5)
    assert evicted == [(key(1), b"\x01\x01"), (key(2), b"\x02\x02")]
    assert tier.keys_lru_first() == [key(3), key(0), key(4), key(5)]
    assert (len(tier), tier.bytes_stored, tier.evictions) == (4, 4 * KiB, 2)


def test_budget_is_hard_and_pins_block_eviction(arena: ShmArena) -> None:
    tier = MemoryTier(arena)
    assert tier.reserve(key(9), 4 * KiB + 1) is None  # bigger than the whole tier
    entries = [put(tier, i) for i in range(4)]
    for entry in entries:
        assert entry is not None
        tier.pin(entry)
    assert put(tier, 4) is None  # everything pinned: refused, not over-committed
    assert entries[2] is not None
    tier.unpin(entries[2])
    assert put(tier, 4) is not None
    assert key(2) not in tier and key(4) in tier


def test_delete_of_pinned_entry_defers_free(arena: ShmArena) -> None:
    tier = MemoryTier(arena)
    entry = put(tier, 1, 4 * KiB)
    assert entry is not None
    tier.pin(entry)
    assert tier.delete(key(1)) is True
    assert key(1) not in tier and tier.bytes_stored == 0
    assert arena.allocator.alloc(1) is None  # bytes still held for the reader
    assert bytes(tier.view(entry)[:1]) == b"\x01"
    tier.unpin(entry)
    assert arena.allocator.free_blocks() == [(arena.allocator.base, 4 * KiB)]
    assert tier.delete(key(1)) is False


def test_duplicate_commit_keeps_first(arena: ShmArena) -> None:
    tier = MemoryTier(arena)
    first, second = tier.reserve(key(1), 10), tier.reserve(key(1), 10)
    assert first is not None and second is not None
    tier.commit(first)
    tier.commit(second)
    assert tier.get(key(1)) is first
    assert arena.allocator.used_bytes == 64
