"""Recycled receive buffers for the client, so reads do not page-fault on fresh memory.

Every GET hands the caller buffers it owns. Allocating them fresh costs a page
fault per 4 KiB on first touch: malloc returns big freed blocks to the kernel,
so on the next call the same memory is faulted in and zeroed again. Measured
on the dev machine, that halves the shared-memory read rate. The pool keeps
one long-lived block and gives out slices of it. A slice returns to the pool
when the caller drops its last reference: a ``weakref.finalize`` on the numpy
sub-array that the returned memoryview holds. When the pool is full, or a
value is bigger than the pool, it falls back to a fresh allocation.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from kvmesh.store.shm import FirstFitAllocator


class BufferPool:
    """Caller-owned buffers carved from one recycled block of ``capacity_bytes``."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self._block = np.empty(capacity_bytes, dtype=np.uint8) if capacity_bytes else None
        self._allocator = FirstFitAllocator(0, capacity_bytes) if capacity_bytes >= 64 else None
        # The last reference to a buffer may be dropped on any thread.
        self._lock = threading.Lock()
        self.fallbacks = 0
        """Buffers that did not fit in the pool and were allocated fresh."""

    def take(self, size: int) -> memoryview:
        """A writable, uninitialised buffer of ``size`` bytes that the caller owns."""
        offset = None
        if self._allocator is not None and self._block is not None:
            with self._lock:
                offset = self._allocator.alloc(size)
        if offset is None or self._block is None:
            self.fallbacks += 1
            return np.empty(size, dtype=np.uint8).data
        part = self._block[offset:offset + size]
        finalizer = weakref.finalize(part, self._give_back, offset, size)
        finalizer.atexit = False  # nothing to give back once the process ends
        return part.data

    def _give_back(self, offset: int, size: int) -> None:
        if self._allocator is not None:
            with self._lock:
                self._allocator.free(offset, size)

    @property
    def used_bytes(self) -> int:
        """Bytes currently lent out (with alignment)."""
        return self._allocator.used_bytes if self._allocator is not None else 0
