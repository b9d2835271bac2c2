"""The tiered store: memory tier over the shared-memory arena, optional disk tier, leases.

Everything here is synchronous and runs on the server's event-loop thread, so
no locks are needed: an operation sees the tiers in a consistent state.

Tier policy
-----------
- PUT places a value in memory (evicting LRU entries, which are *demoted* to
  disk when a disk tier exists). A value that cannot be placed in memory (every
  byte pinned, or bigger than the whole budget) goes straight to disk.
- GET and LEASE look in memory, then on disk; a disk hit is *promoted* back to
  memory. The disk copy is kept (the tiers are inclusive), so demoting that
  entry again later costs no write.
- Entries are immutable: a PUT of a present key stores nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

from kvmesh.store.config import StoreConfig
from kvmesh.store.disk_tier import DiskTier
from kvmesh.store.leases import LeaseTable
from kvmesh.store.memory_tier import MemEntry, MemoryTier
from kvmesh.store.protocol import MISS, NOT_LEASED, PutResult
from kvmesh.store.shm import ShmArena, reap_stale_segments


class TierStats(TypedDict):
    """Occupancy of one tier."""

    entries: int
    bytes: int
    capacity_bytes: int
    evictions: int
    corrupt_dropped: NotRequired[int]


class StoreStats(TypedDict):
    """The STATS reply body (JSON) and what the metrics collector reads."""

    tiers: dict[str, TierStats]
    hits: dict[str, int]
    misses: int
    demotions: int
    promotions: int
    rejected_puts: int
    leases_active: int
    leases_expired: int


@dataclass
class StoreCounters:
    """Monotonic event counts, read by the metrics collector and STATS."""

    hits: dict[str, int] = field(default_factory=lambda: {"memory": 0, "disk": 0})
    misses: int = 0
    demotions: int = 0
    promotions: int = 0
    rejected_puts: int = 0


@dataclass
class Readable:
    """A value ready to be sent: its bytes and the pinned entry to unpin afterwards."""

    view: memoryview
    entry: MemEntry | None


class TieredStore:
    """Memory + disk tiers and leases behind the operations of the wire protocol."""

    def __init__(self, config: StoreConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        reap_stale_segments(config.shm_dir)
        self.arena = ShmArena(
            config.shm_dir, config.memory_size_bytes, f"store-{config.port}", config.prefault
        )
        self.memory = MemoryTier(self.arena, on_evict=self._demote)
        self.disk = (
            DiskTier(config.disk_path, config.disk_size_bytes) if config.disk_path else None
        )
        self.leases: LeaseTable[MemEntry] = LeaseTable(config.lease_ttl_s, clock)
        self.counters = StoreCounters()

    def close(self) -> None:
        """End all leases and remove the shared-memory segment."""
        for items in self.leases.drain():
            self._unpin_all(items)
        self.arena.close()

    # -- lookups -------------------------------------------------------------------------

    def contains(self, key: bytes) -> bool:
        """True if either tier holds ``key`` (no LRU update)."""
        return key in self.memory or (self.disk is not None and key in self.disk)

    def exists_prefix(self, keys: Sequence[bytes]) -> int:
        """How many keys, from the first, are present."""
        for i, key in enumerate(keys):
            if not self.contains(key):
                return i
        return len(keys)

    def _find(self, key: bytes) -> MemEntry | bytearray | None:
        """The in-memory entry for ``key``, promoting a disk hit; a private copy if it cannot be."""
        entry = self.memory.get(key)
        if entry is not None:
            self.counters.hits["memory"] += 1
            return entry
        length = self.disk.length(key) if self.disk is not None else None
        if length is None or self.disk is None:
            self.counters.misses += 1
            return None
        self.counters.hits["disk"] += 1
        entry = self.memory.reserve(key, length)
        if entry is None:  # memory is all pinned: serve from a private buffer
            buf = bytearray(length)
            return buf if self.disk.read_into(key, memoryview(buf)) else None
        if not self.disk.read_into(key, self.memory.view(entry)):
            self.memory.abort(entry)
            return None
        self.memory.commit(entry)
        self.counters.promotions += 1
        return entry

    def get_pinned(self, key: bytes) -> Readable | None:
        """``key``'s bytes for sending, pinned until :meth:`done`; ``None`` on a miss."""
        found = self._find(key)
        if found is None:
            return None
        if isinstance(found, bytearray):
            return Readable(memoryview(found), None)
        self.memory.pin(found)
        return Readable(self.memory.view(found), found)

    def done(self, readables: Sequence[Readable | None]) -> None:
        """Unpin what :meth:`get_pinned` returned once its bytes are sent."""
        for item in readables:
            if item is not None and item.entry is not None:
                self.memory.unpin(item.entry)

    # -- leases --------------------------------------------------------------------------

    def lease(self, keys: Sequence[bytes]) -> tuple[int, list[tuple[int, int]]]:
        """Pin the present keys; (lease id or 0, (offset, length) per key).

        An absent key gets length ``MISS``; a present one that cannot be placed
        in memory gets offset ``NOT_LEASED`` and its length.
        """
        rows: list[tuple[int, int]] = []
        pinned: list[MemEntry] = []
        for key in keys:
            found = self._find(key)
            if found is None:
                rows.append((0, MISS))
                continue
            if isinstance(found, bytearray):
                rows.append((NOT_LEASED, len(found)))
                continue
            self.memory.pin(found)
            pinned.append(found)
            rows.append((found.offset, found.length))
        return (self.leases.grant(pinned) if pinned else 0), rows

    def release(self, lease_ids: Sequence[int]) -> int:
        """End leases early; returns how many were live."""
        released = 0
        for lease_id in lease_ids:
            items = self.leases.release(lease_id)
            if items is not None:
                self._unpin_all(items)
                released += 1
        return released

    def expire_leases(self) -> int:
        """Unpin every lease past its deadline; returns how many ended."""
        expired = self.leases.expire()
        for items in expired:
            self._unpin_all(items)
        return len(expired)

    def _unpin_all(self, items: Sequence[MemEntry]) -> None:
        for entry in items:
            self.memory.unpin(entry)

    # -- writes --------------------------------------------------------------------------

    def begin_put(self, key: bytes, length: int) -> MemEntry | bytearray | PutResult:
        """Where to receive a new value: an arena entry, a disk-bound buffer, or a final result."""
        if self.contains(key):
            return PutResult.EXISTS
        entry = self.memory.reserve(key, length)
        if entry is not None:
            return entry
        if self.disk is not None and self.disk.file_size(length) <= self.disk.capacity_bytes:
            return bytearray(length)
        self.counters.rejected_puts += 1
        return PutResult.REJECTED

    def receive_view(self, target: MemEntry | bytearray) -> memoryview:
        """The buffer the value's bytes are read into."""
        if isinstance(target, MemEntry):
            return self.memory.view(target)
        return memoryview(target)

    def finish_put(self, key: bytes, target: MemEntry | bytearray) -> PutResult:
        """Publish a fully received value."""
        if isinstance(target, MemEntry):
            self.memory.commit(target)
            return PutResult.STORED
        assert self.disk is not None  # begin_put only returns a buffer with a disk tier
        if self.disk.put(key, memoryview(target)):
            return PutResult.STORED
        self.counters.rejected_puts += 1
        return PutResult.REJECTED

    def abort_put(self, target: MemEntry | bytearray) -> None:
        """Drop a value whose bytes never fully arrived."""
        if isinstance(target, MemEntry):
            self.memory.abort(target)

    def delete(self, keys: Sequence[bytes]) -> int:
        """Remove keys from both tiers; returns how many were present."""
        deleted = 0
        for key in keys:
            in_memory = self.memory.delete(key)
            on_disk = self.disk.delete(key) if self.disk is not None else False
            deleted += in_memory or on_disk
        return deleted

    def _demote(self, entry: MemEntry, data: memoryview) -> None:
        if self.disk is not None and entry.key not in self.disk and self.disk.put(entry.key, data):
            self.counters.demotions += 1

    # -- introspection -------------------------------------------------------------------

    def stats(self) -> StoreStats:
        """Entries, bytes and counters per tier (the STATS reply body)."""
        tiers: dict[str, TierStats] = {
            "memory": {
                "entries": len(self.memory), "bytes": self.memory.bytes_stored,
                "capacity_bytes": self.memory.capacity_bytes,
                "evictions": self.memory.evictions,
            }
        }
        if self.disk is not None:
            tiers["disk"] = {
                "entries": len(self.disk), "bytes": self.disk.bytes_stored,
                "capacity_bytes": self.disk.capacity_bytes, "evictions": self.disk.evictions,
                "corrupt_dropped": self.disk.corrupt_dropped,
            }
        c = self.counters
        return {
            "tiers": tiers, "hits": dict(c.hits), "misses": c.misses,
            "demotions": c.demotions, "promotions": c.promotions,
            "rejected_puts": c.rejected_puts, "leases_active": len(self.leases),
            "leases_expired": self.leases.expired_total,
        }
