"""KV offload tiers (L1, L2) as the simulator sees them.

The simulator uses the real cache library (:class:`kvmesh.kvcache.TieredKVCache`)
and the real L2 backends, so a sim fleet exercises the same store, Redis and
KV events as a vLLM fleet. Only the chunk *bytes* are stand-ins: a small
placeholder per chunk, while the cost model charges the load time of the
preset's real KV size. That keeps 64 workers within this machine's memory.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kvmesh.common.kv_events import KVEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OffloadHit:
    """How many leading chunks each tier holds (L1 first, then L2)."""

    l1_chunks: int = 0
    l2_chunks: int = 0

    @property
    def total_chunks(self) -> int:
        return self.l1_chunks + self.l2_chunks


class OffloadTiers(ABC):
    """What the simulated engine needs from the offload tiers.

    Contract: ``restore`` never raises on a tier failure (it reports a shorter
    hit, so the engine recomputes); ``store`` never blocks the engine loop on
    the network; ``close`` is idempotent.
    """

    @abstractmethod
    async def restore(self, chain_hashes: Sequence[bytes]) -> OffloadHit:
        """Find and read the longest cached prefix of ``chain_hashes``, split by tier."""

    @abstractmethod
    def store(self, chain_hashes: Sequence[bytes]) -> None:
        """Write (placeholder) KV for the chunks: L1 now, L2 in the background."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release the tiers."""


class NoOffload(OffloadTiers):
    """No L1 and no L2: the engine's own prefix cache only (the baseline)."""

    async def restore(self, chain_hashes: Sequence[bytes]) -> OffloadHit:
        return OffloadHit()

    def store(self, chain_hashes: Sequence[bytes]) -> None:
        return None

    async def close(self) -> None:
        return None


class TieredOffload(OffloadTiers):
    """Offload through :class:`kvmesh.kvcache.tiered.TieredKVCache` with placeholder chunks.

    The cache library is synchronous (its L2 calls carry their own deadlines),
    so lookups and reads run in a worker thread: a slow L2 delays only this
    worker's engine step, never the other replicas sharing the event loop.
    """

    def __init__(self, cache: Any, placeholder: Any) -> None:
        self._cache = cache
        self._placeholder = placeholder
        self._closed = False

    async def restore(self, chain_hashes: Sequence[bytes]) -> OffloadHit:
        if not chain_hashes or self._closed:
            return OffloadHit()
        try:
            return await asyncio.to_thread(self._restore_sync, list(chain_hashes))
        except Exception:  # a tier failure is a miss: recompute
            log.warning("offload restore failed; recomputing", exc_info=True)
            return OffloadHit()

    def _restore_sync(self, hashes: list[bytes]) -> OffloadHit:
        found = self._cache.lookup_hashes(hashes)
        if found.total_chunks == 0:
            return OffloadHit()
        # Really read (and so promote L2 hits into L1): the hit may shrink in between.
        with self._cache.read(hashes[: found.total_chunks]) as chunks:
            got = len(chunks)
        l1 = min(found.l1_chunks, got)
        return OffloadHit(l1, got - l1)

    def store(self, chain_hashes: Sequence[bytes]) -> None:
        if not chain_hashes or self._closed:
            return
        try:
            self._cache.store_hashes(list(chain_hashes), [self._placeholder] * len(chain_hashes))
        except Exception:
            log.warning("offload store failed", exc_info=True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._cache.flush, 5.0)
        self._cache.close()


EventCallback = Callable[[Sequence[KVEvent]], None]
