"""Leases: time-limited pins that let same-host clients read values in place.

A LEASE_MANY request pins the entries it found and returns their offsets in
the shared-memory segment under one lease id. The client copies the bytes out
and sends RELEASE. A client that dies never releases, so every lease carries a
deadline and :meth:`LeaseTable.expire` (run periodically by the server) drops
late ones: nothing stays pinned for longer than the TTL.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Lease(Generic[T]):
    """One granted lease."""

    lease_id: int
    deadline: float
    items: Sequence[T]


class LeaseTable(Generic[T]):
    """Leases in deadline order (all share one TTL, so grant order is deadline order)."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.ttl_s = ttl_s
        self._clock = clock
        self._ids = itertools.count(1)  # 0 means "no lease" on the wire
        self._leases: OrderedDict[int, Lease[T]] = OrderedDict()
        self.expired_total = 0

    def __len__(self) -> int:
        return len(self._leases)

    def grant(self, items: Sequence[T]) -> int:
        """Record a lease over ``items`` (already pinned by the caller); returns its id."""
        lease_id = next(self._ids)
        self._leases[lease_id] = Lease(lease_id, self._clock() + self.ttl_s, items)
        return lease_id

    def release(self, lease_id: int) -> Sequence[T] | None:
        """The items of a live lease, which ends now; ``None`` if unknown or expired."""
        lease = self._leases.pop(lease_id, None)
        return None if lease is None else lease.items

    def expire(self) -> list[Sequence[T]]:
        """End every lease past its deadline; returns their items for unpinning."""
        now = self._clock()
        out: list[Sequence[T]] = []
        while self._leases:
            lease = next(iter(self._leases.values()))
            if lease.deadline > now:
                break
            del self._leases[lease.lease_id]
            out.append(lease.items)
            self.expired_total += 1
        return out

    def drain(self) -> list[Sequence[T]]:
        """End every lease (shutdown)."""
        out = [lease.items for lease in self._leases.values()]
        self._leases.clear()
        return out
