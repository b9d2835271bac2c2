"""Eviction policies for the L1 memory tier, chosen by name.

A policy only orders keys; the tier owns the bytes, the budget and the pins.
The tier calls the policy under its own lock, so policies need no locking.

Orders (first evicted first):
- ``lru``  least recently inserted-or-read first.
- ``fifo`` oldest insertion first; reads do not matter.
- ``lfu``  fewest reads+inserts first; ties go to the oldest insertion.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable

Key = Hashable


class EvictionPolicy(ABC):
    """Orders the keys of one tier for eviction.

    Contract: the tier calls :meth:`inserted` once per new key, :meth:`accessed`
    on every read hit, :meth:`removed` when a key leaves for any reason, and
    :meth:`victim` to ask which present key should go next. ``victim`` must
    skip keys for which ``skip(key)`` is true (pinned entries) and return
    ``None`` when every key is skipped. Operations are O(1) or O(log n),
    except that ``victim`` also walks past skipped keys.
    """

    name: str = ""

    @abstractmethod
    def inserted(self, key: Key) -> None:
        """A new key entered the tier."""

    @abstractmethod
    def accessed(self, key: Key) -> None:
        """A present key was read."""

    @abstractmethod
    def removed(self, key: Key) -> None:
        """A present key left the tier (evicted or deleted)."""

    @abstractmethod
    def victim(self, skip: Callable[[Key], bool]) -> Key | None:
        """The next key to evict, ignoring keys where ``skip`` is true; ``None`` if none."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of keys tracked."""


class _OrderedPolicy(EvictionPolicy):
    """Keys in an OrderedDict, evicted from the front."""

    move_on_access = False

    def __init__(self) -> None:
        self._order: OrderedDict[Key, None] = OrderedDict()

    def inserted(self, key: Key) -> None:
        self._order[key] = None

    def accessed(self, key: Key) -> None:
        if self.move_on_access and key in self._order:
            self._order.move_to_end(key)

    def removed(self, key: Key) -> None:
        self._order.pop(key, None)

    def victim(self, skip: Callable[[Key], bool]) -> Key | None:
        for key in self._order:
            if not skip(key):
                return key
        return None

    def __len__(self) -> int:
        return len(self._order)


class LRUPolicy(_OrderedPolicy):
    """Least recently used first."""

    name = "lru"
    move_on_access = True


class FIFOPolicy(_OrderedPolicy):
    """First inserted, first evicted."""

    name = "fifo"


class LFUPolicy(EvictionPolicy):
    """Least frequently used first; ties broken by insertion order (oldest first).

    A min-heap of ``(count, insertion_seq, key)`` with lazy deletion: a read
    pushes a fresh tuple and leaves the stale one to be discarded when it
    surfaces. The heap is rebuilt when stale tuples outnumber live keys, which
    keeps memory O(n) and every operation amortised O(log n).
    """

    name = "lfu"

    def __init__(self) -> None:
        self._entries: dict[Key, tuple[int, int]] = {}  # key -> (count, insertion seq)
        self._heap: list[tuple[int, int, Key]] = []
        self._seq = 0

    def inserted(self, key: Key) -> None:
        self._seq += 1
        self._entries[key] = (1, self._seq)
        heapq.heappush(self._heap, (1, self._seq, key))

    def accessed(self, key: Key) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        count, seq = entry[0] + 1, entry[1]
        self._entries[key] = (count, seq)
        heapq.heappush(self._heap, (count, seq, key))
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [(c, s, k) for k, (c, s) in self._entries.items()]
            heapq.heapify(self._heap)

    def removed(self, key: Key) -> None:
        self._entries.pop(key, None)

    def _live(self, item: tuple[int, int, Key]) -> bool:
        return self._entries.get(item[2]) == (item[0], item[1])

    def victim(self, skip: Callable[[Key], bool]) -> Key | None:
        set_aside: list[tuple[int, int, Key]] = []
        found: Key | None = None
        while self._heap:
            item = heapq.heappop(self._heap)
            if not self._live(item):
                continue  # stale: the key was read again or removed
            set_aside.append(item)
            if not skip(item[2]):
                found = item[2]
                break
        for item in set_aside:  # the victim stays too, until removed() is called
            heapq.heappush(self._heap, item)
        return found

    def __len__(self) -> int:
        return len(self._entries)


POLICIES: dict[str, type[EvictionPolicy]] = {
    LRUPolicy.name: LRUPolicy,
    LFUPolicy.name: LFUPolicy,
    FIFOPolicy.name: FIFOPolicy,
}
"""Policy name -> class; the names accepted by ``CacheConfig.eviction_policy``."""


def make_policy(name: str) -> EvictionPolicy:
    """A fresh policy called ``name``; ``ValueError`` naming the choices otherwise."""
    cls = POLICIES.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown eviction policy {name!r}; choose one of {sorted(POLICIES)}")
    return cls()
