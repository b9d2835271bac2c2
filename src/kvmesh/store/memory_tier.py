"""The memory tier: an LRU index over values held in the shared-memory arena.

The budget is hard because it *is* the arena: a value that cannot be placed
after evicting every unpinned entry is refused, never over-committed.

An entry is pinned while a TCP reply is being sent from its bytes or while a
shared-memory lease covers it. Pinned entries are never evicted; deleting one
only hides it, and its bytes are freed when the last pin goes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from kvmesh.store.shm import ShmArena


@dataclass(eq=False)
class MemEntry:
    """One value in the arena."""

    key: bytes
    offset: int
    length: int
    pins: int = 0
    """Readers currently holding the bytes (TCP sends, leases)."""
    dead: bool = False
    """Removed from the index; bytes freed when ``pins`` drops to 0."""


EvictHook = Callable[[MemEntry, memoryview], None]
"""Called with an entry and its bytes just before an eviction frees them."""


class MemoryTier:
    """LRU-ordered values in a :class:`ShmArena`."""

    def __init__(self, arena: ShmArena, on_evict: EvictHook | None = None) -> None:
        self.arena = arena
        self.on_evict = on_evict
        self._index: OrderedDict[bytes, MemEntry] = OrderedDict()
        self.bytes_stored = 0
        """Sum of value lengths in the index (the arena's usage adds alignment)."""
        self.evictions = 0

    @property
    def capacity_bytes(self) -> int:
        """The hard budget."""
        return self.arena.allocator.capacity

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def keys_lru_first(self) -> list[bytes]:
        """Keys from least to most recently used."""
        return list(self._index)

    def get(self, key: bytes) -> MemEntry | None:
        """The entry for ``key`` (marked most recently used), or ``None``."""
        entry = self._index.get(key)
        if entry is not None:
            self._index.move_to_end(key)
        return entry

    def view(self, entry: MemEntry) -> memoryview:
        """The entry's bytes, in place."""
        return self.arena.slice(entry.offset, entry.length)

    def reserve(self, key: bytes, length: int) -> MemEntry | None:
        """Space for a new value, evicting LRU entries as needed; ``None`` if it cannot fit.

        The entry is invisible until :meth:`commit`; call :meth:`abort` if
        filling it fails.
        """
        allocator = self.arena.allocator
        if allocator.block_size(length) > allocator.capacity:
            return None
        while (offset := allocator.alloc(length)) is None:
            if not self._evict_one():
                return None
        return MemEntry(key=key, offset=offset, length=length)

    def commit(self, entry: MemEntry) -> None:
        """Publish a reserved and filled entry as most recently used."""
        if entry.key in self._index:  # lost a race with an identical PUT: keep the first
            self._free(entry)
            return
        self._index[entry.key] = entry
        self.bytes_stored += entry.length

    def abort(self, entry: MemEntry) -> None:
        """Give back a reserved entry that was never committed."""
        self._free(entry)

    def pin(self, entry: MemEntry) -> None:
        """Keep the entry's bytes in place until :meth:`unpin`."""
        entry.pins += 1

    def unpin(self, entry: MemEntry) -> None:
        """Drop one pin; frees the bytes of a deleted entry when it was the last."""
        entry.pins -= 1
        if entry.pins == 0 and entry.dead:
            self._free(entry)

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; True if it was present."""
        entry = self._index.pop(key, None)
        if entry is None:
            return False
        self._retire(entry)
        return True

    def _retire(self, entry: MemEntry) -> None:
        self.bytes_stored -= entry.length
        entry.dead = True
        if entry.pins == 0:
            self._free(entry)

    def _free(self, entry: MemEntry) -> None:
        self.arena.allocator.free(entry.offset, entry.length)

    def _evict_one(self) -> bool:
        victim = next((e for e in self._index.values() if e.pins == 0), None)
        if victim is None:
            return False
        if self.on_evict is not None:
            self.on_evict(victim, self.view(victim))
        del self._index[victim.key]
        self._retire(victim)
        self.evictions += 1
        return True
