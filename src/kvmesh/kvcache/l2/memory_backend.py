"""``memory://``: an in-process L2, for unit tests and the simulator.

It follows the :class:`~kvmesh.kvcache.l2.base.L2Backend` contract exactly,
and adds fault injection (``fail_with``, ``delay_s``) so tests can exercise
deadlines and the circuit breaker without a network. Several caches share one
store by passing the same backend object as ``TieredKVCache(l2=...)``.

URL: ``memory://`` or ``memory://?max_bytes=64MiB`` (oldest entries are
dropped past the budget, like a Redis with ``maxmemory``).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from kvmesh.common.errors import TransportError
from kvmesh.common.units import parse_size
from kvmesh.kvcache.l2.base import Buffer, L2Backend


class MemoryL2Backend(L2Backend):
    """A dict behind the async L2 interface, with optional faults."""

    def __init__(self, max_bytes: int = 0, url: str = "memory://") -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.url = url
        self.max_bytes = max_bytes
        """Budget in bytes; 0 means unbounded."""
        self.fail_with: Exception | None = None
        """When set, every call raises this (simulates a dead backend)."""
        self.delay_s = 0.0
        """Every call first waits this long (simulates a slow backend)."""
        self.calls: dict[str, int] = {
            "exists_prefix": 0,
            "get_many": 0,
            "put_many": 0,
            "delete_many": 0,
        }
        """Calls made per method (tests assert on them)."""
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()  # the simulator may share one store across loops
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> MemoryL2Backend:
        """Parse ``memory://[?max_bytes=SIZE]``."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - {"max_bytes"})
        if unknown or parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"memory L2 URL takes only ?max_bytes=SIZE, got {url!r}")
        max_bytes = parse_size(query["max_bytes"][-1]) if "max_bytes" in query else 0
        return cls(max_bytes=max_bytes, url=url)

    async def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if self._closed:
            raise TransportError("memory L2 backend is closed")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # simulated latency, not a readiness wait
        if self.fail_with is not None:
            raise self.fail_with

    async def exists_prefix(self, keys: Sequence[bytes]) -> int:
        await self._enter("exists_prefix")
        with self._lock:
            for i, key in enumerate(keys):
                if key not in self._data:
                    return i
            return len(keys)

    async def get_many(self, keys: Sequence[bytes]) -> list[Buffer | None]:
        await self._enter("get_many")
        with self._lock:
            return [self._data.get(key) for key in keys]

    async def put_many(self, items: Sequence[tuple[bytes, Buffer]]) -> None:
        await self._enter("put_many")
        for key, value in items:
            self.plant(key, bytes(value), overwrite=False)

    async def delete_many(self, keys: Sequence[bytes]) -> None:
        await self._enter("delete_many")
        with self._lock:
            for key in keys:
                value = self._data.pop(key, None)
                if value is not None:
                    self._used -= len(value)

    def plant(self, key: bytes, value: bytes, *, overwrite: bool = True) -> None:
        """Set a raw value synchronously (tests plant corrupt values with this)."""
        with self._lock:
            if key in self._data:
                if not overwrite:
                    return
                self._used -= len(self._data.pop(key))
            self._data[key] = value
            self._used += len(value)
            while self.max_bytes and self._used > self.max_bytes and self._data:
                _, dropped = self._data.popitem(last=False)
                self._used -= len(dropped)

    def raw(self, key: bytes) -> bytes | None:
        """The stored value of ``key`` (tests)."""
        with self._lock:
            return self._data.get(key)

    def __len__(self) -> int:
        return len(self._data)

    async def close(self) -> None:
        self._closed = True
