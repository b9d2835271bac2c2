"""``TieredKVCache``: L1 (node CPU memory) over L2 (cluster-wide), never slower than recompute.

Flow of one request::

    lookup(tokens) -> chain hashes h_0..h_n -> storage keys k_i (bound to the KV layout)
        L1: leading run of k_i present in memory          -> l1_chunks
        L2: leading run of the rest (one EXISTS pipeline)  -> l2_chunks  (deadline; failure = miss)
    read(hashes)  -> pin the L1 run; fetch the rest from L2 (one MGET, deadline), validate each
                     frame (corrupt = counted miss, stops the run), promote into L1, yield chunks
    store(...)    -> copy into L1 now; enqueue the same frame for L2 (bounded queue, drop when full)

Only a contiguous prefix ever counts: a chunk's KV is only valid after the
KV of every chunk before it. ``read`` may return fewer chunks than ``lookup``
promised (eviction, corruption, deadline in between); callers recompute the
rest. No method raises because of a cache failure; misuse raises ValueError.

An ``l2`` backend passed to the constructor stays the caller's: ``close()``
does not close it, so several caches (tests, the simulator) can share one
in-process store. A backend built from ``config.l2_url`` is the cache's own.

Events (``on_event``) carry chain hashes, not storage keys, and may be
emitted from the L2 writer thread: the callback must be quick and thread-safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from prometheus_client import CollectorRegistry

from kvmesh.common.errors import CorruptEntryError
from kvmesh.common.hashing import (
    NO_EXTRAS,
    ChainSpec,
    KVLayout,
    RequestExtras,
    prefix_hashes,
    storage_key,
)
from kvmesh.common.kv_events import KVEvent, Tier, admitted, evicted
from kvmesh.kvcache.chunk import KVChunk
from kvmesh.kvcache.config import CacheConfig
from kvmesh.kvcache.dtypes import BY_NAME
from kvmesh.kvcache.l1 import EvictedEntry, MemoryTier, PutStatus
from kvmesh.kvcache.l2.base import L2Backend
from kvmesh.kvcache.l2.registry import create_l2_backend
from kvmesh.kvcache.l2_guard import GuardedL2, WriteItem
from kvmesh.kvcache.metrics import CacheMetrics
from kvmesh.kvcache.serde import Frame, decode, frame_copy

log = logging.getLogger(__name__)

Tokens = Sequence[int] | np.ndarray


@dataclass(frozen=True)
class LookupResult:
    """How much of a prefix is cached, per tier (chunks, contiguous from chunk 0)."""

    l1_chunks: int
    """Leading chunks in L1."""
    l2_chunks: int
    """Chunks right after the L1 run that L2 holds."""

    @property
    def total_chunks(self) -> int:
        """Leading chunks available from either tier."""
        return self.l1_chunks + self.l2_chunks


def expected_chunk_bytes(layout: KVLayout, chunk_size: int) -> int:
    """K and V bytes of one chunk in ``layout``, for the L2 data deadline (unknown dtype: 2 B)."""
    known = BY_NAME.get(layout.kv_dtype.removeprefix("torch."))
    itemsize = known.itemsize if known is not None else 2
    return 2 * layout.num_layers * layout.num_kv_heads * layout.head_dim * chunk_size * itemsize


class TieredKVCache:
    """The cache library's public face; see the module docstring for the flow."""

    def __init__(
        self,
        config: CacheConfig,
        spec: ChainSpec,
        layout: KVLayout,
        *,
        registry: CollectorRegistry | None = None,
        on_event: Callable[[KVEvent], None] | None = None,
        l2: L2Backend | None = None,
    ) -> None:
        if config.chunk_size != spec.chunk_size:
            raise ValueError(
                f"config.chunk_size={config.chunk_size} != spec.chunk_size={spec.chunk_size}"
            )
        self.config = config
        self.spec = spec
        self.layout = layout
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = CacheMetrics(self.registry)
        self._on_event = on_event
        self._chunk_bytes = expected_chunk_bytes(layout, spec.chunk_size)
        self._closed = False
        self.l1 = MemoryTier(
            config.l1_size_bytes,
            config.eviction_policy,
            on_evict=self._l1_evicted,
            recycle=config.l1_recycle_buffers,
        )
        self.metrics.bind_l1(
            lambda: self.l1.used_bytes, lambda: self.l1.num_entries, config.l1_size_bytes
        )
        backend = (
            l2 if l2 is not None else (create_l2_backend(config.l2_url) if config.l2_url else None)
        )
        self._l2: GuardedL2 | None = None
        if backend is not None:
            self._l2 = GuardedL2(
                backend, config, self.metrics, on_written=self._l2_written, owns_backend=l2 is None
            )

    # ---- keys --------------------------------------------------------------------

    def chain_hashes(self, tokens: Tokens, extras: RequestExtras = NO_EXTRAS) -> list[bytes]:
        """Chain hashes of every full chunk of ``tokens`` (the one hash chain)."""
        return prefix_hashes(tokens, self.spec, extras)

    def _keys(self, chain_hashes: Sequence[bytes]) -> list[bytes]:
        return [storage_key(h, self.layout, self.spec.seed) for h in chain_hashes]

    @property
    def l2_available(self) -> bool:
        """True if an L2 is configured and its circuit breaker is closed."""
        return self._l2 is not None and self._l2.available

    # ---- lookup --------------------------------------------------------------------

    def lookup(self, tokens: Tokens, extras: RequestExtras = NO_EXTRAS) -> int:
        """Leading tokens available from L1 then L2 (a multiple of the chunk size)."""
        return (
            self.lookup_hashes(self.chain_hashes(tokens, extras)).total_chunks
            * self.spec.chunk_size
        )

    def lookup_hashes(self, chain_hashes: Sequence[bytes]) -> LookupResult:
        """How many leading chunks L1, then L2, hold. Never raises on L2 failure."""
        started = time.perf_counter()
        keys = self._keys(chain_hashes)
        n1 = self.l1.exists_prefix(keys)
        n2 = 0
        if n1 < len(keys) and self._l2 is not None:
            n2 = self._l2.exists_prefix(keys[n1:]) or 0
            if n2 < self.config.l2_min_hit_chunks:
                n2 = 0
        cs = self.spec.chunk_size
        self.metrics.lookup(len(keys) * cs)
        self.metrics.hit("l1", n1 * cs)
        self.metrics.hit("l2", n2 * cs)
        self.metrics.latency.labels("lookup").observe(time.perf_counter() - started)
        return LookupResult(n1, n2)

    # ---- read ----------------------------------------------------------------------

    @contextmanager
    def read(self, chain_hashes: Sequence[bytes]) -> Iterator[list[KVChunk]]:
        """Yield the longest available contiguous prefix of chunks, valid until the block exits.

        L1 entries are pinned; L2 hits are validated, promoted into L1 and
        held by reference, so nothing yielded can be freed mid-copy.
        """
        started = time.perf_counter()
        keys = self._keys(chain_hashes)
        with self.l1.pinned(keys) as l1_chunks:
            chunks = list(l1_chunks)
            self.metrics.read("l1", sum(c.nbytes for c in chunks))
            if len(chunks) < len(keys) and self._l2 is not None:
                frames = self._fetch_l2(self._l2, keys[len(chunks) :])
                self._promote(chain_hashes[len(chunks) :], keys[len(chunks) :], frames)
                chunks.extend(f.chunk for f in frames)
                self.metrics.read("l2", sum(f.chunk.nbytes for f in frames))
            self.metrics.latency.labels("read").observe(time.perf_counter() - started)
            yield chunks

    def _fetch_l2(self, l2: GuardedL2, keys: list[bytes]) -> list[Frame]:
        """Validated frames of the leading run of ``keys`` in L2 (stops at a miss or corruption)."""
        values = l2.get_many(keys, expected_bytes=len(keys) * self._chunk_bytes)
        frames: list[Frame] = []
        for key, value in zip(keys, values or (), strict=False):
            if value is None:
                break
            try:
                frames.append(decode(value))
            except CorruptEntryError as exc:
                log.warning("corrupt L2 value for %s: %s (treated as a miss)", key.hex(), exc)
                self.metrics.corrupt_entry("l2")
                l2.discard([key])
                break
        return frames

    def _promote(self, hashes: Sequence[bytes], keys: list[bytes], frames: list[Frame]) -> None:
        if self.config.l1_size_bytes == 0:
            return
        promoted: list[bytes] = []
        for chain_hash, key, frame in zip(hashes, keys, frames, strict=False):
            if self.l1.put_frame(key, frame, tag=chain_hash):
                promoted.append(chain_hash)
                self.metrics.written("l1", frame.chunk.nbytes)
            else:
                self.metrics.rejected_write("l1")
        self._emit(admitted(Tier.L1, promoted))

    def load(self, tokens: Tokens, extras: RequestExtras = NO_EXTRAS) -> list[KVChunk]:
        """Copies of the longest available prefix of ``tokens``' chunks (owned by the caller)."""
        with self.read(self.chain_hashes(tokens, extras)) as chunks:
            return [chunk.copy() for chunk in chunks]

    # ---- store ---------------------------------------------------------------------

    def store(
        self,
        tokens: Tokens,
        extras: RequestExtras,
        chunks: Sequence[KVChunk | np.ndarray],
        *,
        start_chunk: int = 0,
    ) -> int:
        """Store ``chunks`` as chunks ``start_chunk, start_chunk + 1, ...`` of ``tokens``.

        See :meth:`store_hashes`; ``ValueError`` if ``tokens`` has too few full chunks.
        """
        if start_chunk < 0:
            raise ValueError(f"start_chunk must be >= 0, got {start_chunk}")
        end = start_chunk + len(chunks)
        hashes = prefix_hashes(tokens, self.spec, extras, max_chunks=end)
        if len(hashes) < end:
            raise ValueError(
                f"{len(chunks)} chunks from chunk {start_chunk} need {end} full chunks "
                f"of tokens, got {len(hashes)}"
            )
        return self.store_hashes(hashes[start_chunk:], chunks)

    def store_hashes(
        self, chain_hashes: Sequence[bytes], chunks: Sequence[KVChunk | np.ndarray]
    ) -> int:
        """Write to L1 now and queue for L2; returns chunks now held by L1. Never waits on L2."""
        if len(chain_hashes) != len(chunks):
            raise ValueError(f"{len(chain_hashes)} chain hashes for {len(chunks)} chunks")
        started = time.perf_counter()
        stored: list[bytes] = []
        writes: list[WriteItem] = []
        accepted = 0
        for chain_hash, raw in zip(chain_hashes, chunks, strict=True):
            chunk = raw if isinstance(raw, KVChunk) else KVChunk.from_array(np.asarray(raw))
            key = storage_key(chain_hash, self.layout, self.spec.seed)
            frame: Frame | None = None
            if self.config.l1_size_bytes:
                result = self.l1.put(key, chunk, tag=chain_hash, lease=self._l2 is not None)
                if result.status is PutStatus.PRESENT:
                    accepted += 1  # already cached here, hence already sent to L2
                    continue
                if result.status is PutStatus.INSERTED:
                    accepted += 1
                    stored.append(chain_hash)
                    self.metrics.written("l1", chunk.nbytes)
                    frame = result.frame
                else:
                    self.metrics.rejected_write("l1")
            if self._l2 is not None:
                writes.append(
                    WriteItem(key, frame if frame is not None else frame_copy(chunk), chain_hash)
                )
        if self._l2 is not None:
            self._l2.submit_writes(writes)
        self._emit(admitted(Tier.L1, stored))
        self.metrics.latency.labels("store").observe(time.perf_counter() - started)
        return accepted

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for queued L2 writes to finish; True when none are left."""
        return self._l2 is None or self._l2.flush(timeout_s)

    # ---- events and stats ----------------------------------------------------------

    def _l1_evicted(self, entries: list[EvictedEntry]) -> None:
        self.metrics.evicted("l1", len(entries))
        self._emit(evicted(Tier.L1, [e.tag for e in entries if isinstance(e.tag, bytes)]))

    def _l2_written(self, items: list[WriteItem]) -> None:
        self._emit(admitted(Tier.L2, [i.tag for i in items if isinstance(i.tag, bytes)]))

    def _emit(self, event: KVEvent) -> None:
        if self._on_event is None or not event.chain_hashes:
            return
        try:
            self._on_event(event)
        except Exception:  # an event sink must not break the cache
            log.exception("on_event callback failed")

    def stats(self) -> dict[str, int | float]:
        """Plain counters (see :class:`CacheMetrics`) plus current L1 and L2 state."""
        out: dict[str, Any] = self.metrics.snapshot()
        out.update(
            l1_used_bytes=self.l1.used_bytes,
            l1_entries=self.l1.num_entries,
            l1_capacity_bytes=self.l1.capacity_bytes,
            l1_evictions_total=self.l1.counters.evictions,
        )
        if self._l2 is not None:
            out.update(
                l2_pending_writes=self._l2.pending_writes,
                l2_breaker_state=int(self._l2.breaker.state),
                l2_breaker_opened=self._l2.breaker.times_opened,
            )
        return out

    def close(self) -> None:
        """Stop the L2 thread and release connections. Idempotent; L1 stays readable."""
        if self._closed:
            return
        self._closed = True
        if self._l2 is not None:
            self._l2.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
