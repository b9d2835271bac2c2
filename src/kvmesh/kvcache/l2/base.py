"""The L2 backend interface: a cluster-wide, content-addressed chunk store.

Contract shared by every backend (Redis, the kvmesh store, ...):

- Keys are 16-byte storage keys (:func:`kvmesh.common.hashing.storage_key`).
  Values are opaque byte strings; the cache library puts serde-framed chunks
  there and validates them on the way back, so a backend never interprets them.
- Entries are immutable: putting a key that already exists is a success and
  need not write anything.
- Every method is a coroutine and may block on the network. It has **no
  deadline of its own**; :class:`kvmesh.kvcache.tiered.TieredKVCache` wraps each
  call in one and treats a late answer as a miss.
- A miss is not an error: ``get_many`` returns ``None`` in its slot.
- Transport failures raise :class:`kvmesh.common.errors.TransportError` (or a
  subclass); a backend never leaks its client library's exception types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

Buffer = bytes | bytearray | memoryview


class L2Backend(ABC):
    """A cluster-wide chunk store reached over the network."""

    url: str
    """The URL the backend was created from, with any password removed."""

    @abstractmethod
    async def exists_prefix(self, keys: Sequence[bytes]) -> int:
        """Return how many of ``keys``, from the first on, are present.

        Stops counting at the first absent key: ``[hit, miss, hit]`` gives 1.
        """

    @abstractmethod
    async def get_many(self, keys: Sequence[bytes]) -> list[Buffer | None]:
        """Return each key's value in order, ``None`` where it is absent.

        The returned buffers belong to the caller and stay valid after the call.
        """

    @abstractmethod
    async def put_many(self, items: Sequence[tuple[bytes, Buffer]]) -> None:
        """Store every ``(key, value)``; existing keys count as success."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent; the backend is unusable afterwards."""

    async def delete_many(self, keys: Sequence[bytes]) -> None:
        """Remove ``keys`` if present (absent keys are fine).

        The cache calls this, best effort, for values that failed validation,
        so that a corrupt entry does not shadow a good rewrite (puts never
        overwrite). Backends that cannot delete keep this default, which
        raises ``NotImplementedError``; the cache then leaves the entry alone.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot delete entries")

    async def ping(self) -> None:
        """Raise a ``TransportError`` unless the backend answers. Used by reconnect probes."""
        await self.exists_prefix([])
