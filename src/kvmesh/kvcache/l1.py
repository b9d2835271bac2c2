"""The L1 tier: chunks in this node's CPU memory under a hard byte budget.

Entries are :class:`~kvmesh.kvcache.serde.Frame` objects keyed by storage key.
Readers pin entries for the duration of a ``with`` block, and eviction never
touches a pinned entry, so a reader's memoryviews stay valid while it copies
into engine KV blocks. One lock guards the index; the byte copy of a ``put``
happens before taking it, so writers do not serialise on memcpy.

Accounting counts ``Frame.nbytes`` (header + payload). Python object overhead
(~200 B per entry) is not counted: it is negligible next to KV chunks of
megabytes.
"""

from __future__ import annotations

import enum
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from kvmesh.kvcache.chunk import KVChunk
from kvmesh.kvcache.eviction import EvictionPolicy, make_policy
from kvmesh.kvcache.serde import HEADER_SIZE, Frame, frame_copy


@dataclass
class _Entry:
    frame: Frame
    tag: object
    pins: int = 0


class PutStatus(enum.Enum):
    """Outcome of :meth:`MemoryTier.put`."""

    INSERTED = "inserted"
    PRESENT = "present"
    """The key was already there (entries are immutable; nothing was copied)."""
    REJECTED = "rejected"
    """Too large for the budget, or pinned entries left too little room (counted)."""


@dataclass(frozen=True)
class PutResult:
    """What a put did, and the frame now held under the key (None when rejected)."""

    status: PutStatus
    frame: Frame | None


class _Evicted(NamedTuple):
    key: bytes
    tag: object
    frame: Frame


_REFS_HERE = 1
"""References to an evicted frame held by ``_reusable``'s local name while it is checked."""


@dataclass(frozen=True)
class EvictedEntry:
    """What the eviction callback learns about one evicted entry."""

    key: bytes
    """The storage key."""
    tag: object
    """Whatever the writer attached at ``put`` (the cache attaches the chain hash)."""


@dataclass
class TierCounters:
    """Plain counters of one tier (read them under no lock: they only grow)."""

    evictions: int = 0
    """Entries evicted to make room."""
    rejected_too_large: int = 0
    """Puts refused because one entry exceeds the whole budget."""
    rejected_pinned: int = 0
    """Puts refused because pinned entries left too little evictable room."""


EvictCallback = Callable[[list[EvictedEntry]], None]


class MemoryTier:
    """A thread-safe, byte-budgeted map from storage key to framed chunk."""

    def __init__(
        self,
        capacity_bytes: int,
        policy: str | EvictionPolicy = "lru",
        *,
        on_evict: EvictCallback | None = None,
        recycle: bool = True,
    ) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self._policy = make_policy(policy) if isinstance(policy, str) else policy
        self._on_evict = on_evict
        self._entries: dict[bytes, _Entry] = {}
        self._used = 0
        self._pinned_bytes = 0
        self._reserved = 0
        self.recycle = recycle
        """Reuse evicted buffers for new puts (see :meth:`_reusable`)."""
        self._lock = threading.Lock()
        self.counters = TierCounters()

    @property
    def policy_name(self) -> str:
        """Name of the eviction policy."""
        return self._policy.name

    @property
    def used_bytes(self) -> int:
        """Bytes held now (never above ``capacity_bytes``)."""
        return self._used

    @property
    def num_entries(self) -> int:
        """Entries held now."""
        return len(self._entries)

    def contains(self, key: bytes) -> bool:
        """True if ``key`` is present (does not count as a read)."""
        return key in self._entries

    def exists_prefix(self, keys: Sequence[bytes]) -> int:
        """How many of ``keys``, from the first on, are present (not a read)."""
        with self._lock:
            for i, key in enumerate(keys):
                if key not in self._entries:
                    return i
            return len(keys)

    def put(
        self, key: bytes, chunk: KVChunk, *, tag: object = None, lease: bool = False
    ) -> PutResult:
        """Copy ``chunk`` in under ``key``, evicting unpinned entries as needed.

        The copy runs outside the lock into bytes reserved beforehand, reusing
        the buffer of an entry this put evicted when that is safe (see
        :meth:`_reusable`), so a full L1 does not page-fault fresh memory on
        every put. ``lease`` marks the new frame as held by the L2 writer,
        which must drop ``frame.leases`` back to 0 when done with it.
        """
        size = HEADER_SIZE + chunk.nbytes
        with self._lock:
            refused = self._refuse(key, size)
            if refused is not None:
                return refused
            evicted = self._make_room(size)
            recycled = next((e.frame.buffer for e in evicted if self._reusable(e, size)), None)
            self._reserved += size
            self._used += size
        self._notify([EvictedEntry(e.key, e.tag) for e in evicted])
        del evicted  # drop our references before anyone could observe them
        try:
            frame = frame_copy(chunk, into=recycled)
            frame.leases = 1 if lease else 0
        except BaseException:
            with self._lock:
                self._unreserve(size)
            raise
        with self._lock:
            self._unreserve(size)  # in the same critical section as the insert below
            existing = self._entries.get(key)
            if existing is not None:  # a concurrent put of the same key won
                return PutResult(PutStatus.PRESENT, existing.frame)
            if self._used + size > self.capacity_bytes:  # unreachable: the bytes were reserved
                raise RuntimeError("L1 accounting error: reserved bytes were taken")
            self._insert(key, frame, tag)
        return PutResult(PutStatus.INSERTED, frame)

    def _unreserve(self, size: int) -> None:
        self._reserved -= size
        self._used -= size

    def put_frame(self, key: bytes, frame: Frame, *, tag: object = None) -> bool:
        """Adopt ``frame`` (no copy) under ``key``, evicting unpinned entries as needed.

        Returns True if the key is present afterwards (an existing key is kept
        as is: entries are immutable). Returns False, and counts why, when the
        frame is larger than the budget or pinned entries leave too little room.
        """
        size = frame.nbytes
        with self._lock:
            refused = self._refuse(key, size)
            if refused is not None:
                return refused.status is PutStatus.PRESENT
            evicted = self._make_room(size)
            self._insert(key, frame, tag)
        self._notify([EvictedEntry(e.key, e.tag) for e in evicted])
        return True

    def _refuse(self, key: bytes, size: int) -> PutResult | None:
        """Why a put of ``size`` bytes cannot insert now (caller holds the lock), or None."""
        existing = self._entries.get(key)
        if existing is not None:
            return PutResult(PutStatus.PRESENT, existing.frame)
        if size > self.capacity_bytes:
            self.counters.rejected_too_large += 1
            return PutResult(PutStatus.REJECTED, None)
        # Pinned entries and bytes reserved by in-flight puts cannot be evicted.
        if self.capacity_bytes - self._pinned_bytes - self._reserved < size:
            self.counters.rejected_pinned += 1
            return PutResult(PutStatus.REJECTED, None)
        return None

    def _insert(self, key: bytes, frame: Frame, tag: object) -> None:
        self._entries[key] = _Entry(frame, tag)
        self._used += frame.nbytes
        self._policy.inserted(key)

    def _make_room(self, size: int) -> list[_Evicted]:
        """Evict until ``size`` more bytes fit. Caller holds the lock and ran :meth:`_refuse`."""
        evicted: list[_Evicted] = []
        while self._used + size > self.capacity_bytes:
            key = self._policy.victim(self._is_pinned)
            if key is None:  # unreachable after _refuse; stay safe
                raise RuntimeError("L1 accounting error: no evictable entry")
            entry = self._drop(key)  # type: ignore[arg-type]  # policies hold our bytes keys
            evicted.append(_Evicted(key, entry.tag, entry.frame))  # type: ignore[arg-type]
        self.counters.evictions += len(evicted)
        return evicted

    def _reusable(self, evicted: _Evicted, size: int) -> bool:
        """May the evicted frame's buffer be overwritten by a new put?

        Only if recycling is on, the buffer is ours, of the right size, and
        nothing outside L1 holds it: no lease (L2 writer), and no extra
        references to the frame, its chunk or its memoryview (a reader that
        kept a chunk past its ``read`` block, ``torch.frombuffer``...). Views
        re-exported from the memoryview (``np.frombuffer``) are invisible to
        this guard: keeping those past the ``read`` block breaks the contract.
        """
        frame = evicted.frame
        if not (self.recycle and frame.recyclable and frame.nbytes == size and frame.leases == 0):
            return False
        # Baselines: the _Evicted tuple and the local name hold the frame; the frame
        # holds its chunk and its buffer; the chunk holds its view; the payload view
        # (inside the memoryview) holds the buffer; getrefcount's argument adds one.
        return (
            sys.getrefcount(frame) <= 2 + _REFS_HERE
            and sys.getrefcount(frame.chunk) <= 2
            and sys.getrefcount(frame.chunk.data) <= 2
            and sys.getrefcount(frame.buffer) <= 3
        )

    def _is_pinned(self, key: object) -> bool:
        entry = self._entries.get(key)  # type: ignore[call-overload]
        return entry is not None and entry.pins > 0

    def _drop(self, key: bytes) -> _Entry:
        entry = self._entries.pop(key)
        self._used -= entry.frame.nbytes
        self._policy.removed(key)
        return entry

    def _notify(self, evicted: list[EvictedEntry]) -> None:
        # Outside the lock: the callback may publish events or call back in.
        if evicted and self._on_evict is not None:
            self._on_evict(evicted)

    @contextmanager
    def pinned(self, keys: Sequence[bytes]) -> Iterator[list[KVChunk]]:
        """Pin the leading present run of ``keys`` and yield their chunks.

        The chunks' memory cannot be evicted until the block exits. Each
        yielded entry counts as one read for the eviction policy.
        """
        entries: list[_Entry] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None:
                    break
                if entry.pins == 0:
                    self._pinned_bytes += entry.frame.nbytes
                entry.pins += 1
                self._policy.accessed(key)
                entries.append(entry)
        try:
            yield [entry.frame.chunk for entry in entries]
        finally:
            with self._lock:
                for entry in entries:
                    entry.pins -= 1
                    if entry.pins == 0:
                        self._pinned_bytes -= entry.frame.nbytes

    def remove(self, key: bytes) -> bool:
        """Delete ``key`` unless pinned; True if removed. Not counted as an eviction."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.pins > 0:
                return False
            self._drop(key)
            return True

    def clear(self) -> int:
        """Delete every unpinned entry; returns how many went."""
        with self._lock:
            keys = [k for k, e in self._entries.items() if e.pins == 0]
            for key in keys:
                self._drop(key)
            return len(keys)

    def keys(self) -> list[bytes]:
        """Present keys, in insertion order (for tests and debugging)."""
        with self._lock:
            return list(self._entries)
