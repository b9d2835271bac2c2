"""``kvmesh://`` L2 backend: one or many ``kvmesh store`` servers as one cluster-wide L2.

URL: ``kvmesh://[:TOKEN@]host:port[,host2:port2,...][?OPTIONS]`` with options
``pool=4`` (connections per server), ``shm=1``, ``connect_timeout=2s``,
``retry_interval=1s``, ``buffer_pool=256MiB`` and ``token=``.
The token may instead come from the ``KVMESH_STORE_TOKEN`` environment variable.

With several servers each key lives on exactly one, chosen by rendezvous (HRW)
hashing: ``node(key) = argmax_n xxh3_64(key, seed=xxh3_64(node_id))``. Adding or
removing a server moves only the keys it gains or loses. When a server of a
cluster is down, its keys read as misses and its writes are dropped, and every
request still succeeds; it is retried after ``retry_interval_s``. Only when
every server is down (or the single server of a one-node URL) does a call
raise :class:`~kvmesh.common.errors.TransportError`, as the L2 contract says.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote

import xxhash

from kvmesh.common.errors import BackendUnavailableError, TransportError
from kvmesh.common.units import parse_duration_s, parse_size
from kvmesh.kvcache.l2.base import Buffer, L2Backend
from kvmesh.store.bufpool import BufferPool
from kvmesh.store.node import NodeClient, NodeOptions
from kvmesh.store.protocol import PUT_ENTRY

TOKEN_ENV = "KVMESH_STORE_TOKEN"
"""Environment variable read for the auth token when the URL has none."""

T = TypeVar("T")


@dataclass(frozen=True)
class StoreClientConfig:
    """Everything :class:`StoreL2Backend` needs; usually parsed from a URL."""

    nodes: tuple[tuple[str, int], ...]
    """(host, port) of every server of the cluster."""
    token: str | None = None
    """Shared auth token (None: no auth)."""
    pool_size: int = 4
    """Connections (concurrent requests) per server."""
    connect_timeout_s: float = 2.0
    """Deadline for opening one connection."""
    use_shm: bool = True
    """Read through shared memory when a server is on this host."""
    retry_interval_s: float = 1.0
    """How long a failed server of a cluster is skipped before it is tried again."""
    buffer_pool_bytes: int = 256 << 20
    """Recycled memory for returned values (see :mod:`kvmesh.store.bufpool`); 0 disables."""

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("at least one host:port is required")
        if len(set(self.nodes)) != len(self.nodes):
            raise ValueError("duplicate host:port in the node list")
        for host, port in self.nodes:
            if not host or not 1 <= port <= 65535:
                raise ValueError(f"invalid node {host}:{port}")
        if not 1 <= self.pool_size <= 1024:
            raise ValueError(f"pool_size must be in [1, 1024], got {self.pool_size}")
        if self.connect_timeout_s <= 0 or self.retry_interval_s < 0:
            raise ValueError("connect_timeout_s must be > 0 and retry_interval_s >= 0")
        if self.buffer_pool_bytes < 0:
            raise ValueError(f"buffer_pool_bytes must be >= 0, got {self.buffer_pool_bytes}")

    @classmethod
    def from_url(cls, url: str) -> StoreClientConfig:
        """Parse a ``kvmesh://`` URL; ``ValueError`` naming what is wrong."""
        scheme, sep, rest = url.partition("://")
        if scheme.lower() != "kvmesh" or not sep:
            raise ValueError(f"not a kvmesh:// URL: {url!r}")
        netloc, _, query = rest.partition("?")
        netloc = netloc.rstrip("/")
        token: str | None = None
        if "@" in netloc:
            userinfo, _, netloc = netloc.rpartition("@")
            token = unquote(userinfo.partition(":")[2]) or None
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        token = token or params.get("token") or os.environ.get(TOKEN_ENV) or None
        nodes = tuple(_parse_node(part) for part in netloc.split(",") if part)
        return cls(
            nodes=nodes, token=token, pool_size=int(params.get("pool", 4)),
            connect_timeout_s=parse_duration_s(params.get("connect_timeout", "2s")),
            use_shm=params.get("shm", "1") not in ("0", "false", "no"),
            retry_interval_s=parse_duration_s(params.get("retry_interval", "1s")),
            buffer_pool_bytes=parse_size(params.get("buffer_pool", "256MiB")),
        )


def _parse_node(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port in kvmesh URL, got {text!r}")
    return host.strip("[]"), int(port)


def hrw_owner(key: bytes, node_seeds: Sequence[int]) -> int:
    """Index of the node that owns ``key`` under rendezvous hashing."""
    best, best_score = 0, -1
    for i, seed in enumerate(node_seeds):
        score = xxhash.xxh3_64_intdigest(key, seed=seed)
        if score > best_score:
            best, best_score = i, score
    return best


def _batches(
    items: Sequence[tuple[bytes, Buffer]], max_body: int, max_keys: int
) -> list[list[tuple[bytes, Buffer]]]:
    """Split a PUT into requests that respect the server's size and count limits."""
    out: list[list[tuple[bytes, Buffer]]] = [[]]
    size = 0
    for key, value in items:
        need = PUT_ENTRY.size + memoryview(value).nbytes
        if out[-1] and (size + need > max_body or len(out[-1]) >= max_keys):
            out.append([])
            size = 0
        out[-1].append((key, value))
        size += need
    return [batch for batch in out if batch]


class StoreL2Backend(L2Backend):
    """The L2 interface over one or more ``kvmesh store`` servers."""

    def __init__(self, config: StoreClientConfig) -> None:
        self.config = config
        self.url = "kvmesh://" + ",".join(f"{h}:{p}" for h, p in config.nodes)
        self.buffers = BufferPool(config.buffer_pool_bytes)
        self.nodes = [
            NodeClient(NodeOptions(h, p, config.token, config.pool_size,
                                   config.connect_timeout_s, config.use_shm), self.buffers)
            for h, p in config.nodes
        ]
        self._seeds = [xxhash.xxh3_64_intdigest(n.node_id.encode()) for n in self.nodes]
        self._down_until = [0.0] * len(self.nodes)

    @classmethod
    def from_url(cls, url: str) -> StoreL2Backend:
        """The factory the L2 registry calls for ``kvmesh://`` URLs."""
        return cls(StoreClientConfig.from_url(url))

    def owner(self, key: bytes) -> int:
        """Index in :attr:`nodes` of the server that holds ``key``."""
        return hrw_owner(key, self._seeds)

    def _group(self, keys: Sequence[bytes]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(self.owner(key), []).append(i)
        return groups

    async def _on_node(self, idx: int, call: Callable[[NodeClient], Awaitable[T]]) -> T | None:
        """Run ``call`` on one node; ``None`` if that node is down (clusters only)."""
        if time.monotonic() < self._down_until[idx]:
            self._raise_if_all_down(f"{self.nodes[idx].node_id} is marked down")
            return None
        try:
            return await call(self.nodes[idx])
        except TransportError:
            self._down_until[idx] = time.monotonic() + self.config.retry_interval_s
            if len(self.nodes) == 1:
                raise
            self._raise_if_all_down("every kvmesh store node is down")
            return None

    def _raise_if_all_down(self, message: str) -> None:
        now = time.monotonic()
        if all(now < until for until in self._down_until):
            raise BackendUnavailableError(message)

    async def exists_prefix(self, keys: Sequence[bytes]) -> int:
        groups = self._group(keys)

        async def first_absent(idx: int, positions: list[int]) -> int:
            sub = [keys[i] for i in positions]
            found = await self._on_node(idx, lambda n: n.exists_prefix(sub))
            found = found or 0
            return positions[found] if found < len(positions) else len(keys)

        results = await asyncio.gather(*(first_absent(i, p) for i, p in groups.items()))
        return min(results, default=0)

    async def get_many(self, keys: Sequence[bytes]) -> list[Buffer | None]:
        out: list[Buffer | None] = [None] * len(keys)

        async def fetch(idx: int, positions: list[int]) -> None:
            sub = [keys[i] for i in positions]
            values = await self._on_node(idx, lambda n: n.get_many(sub))
            for pos, value in zip(positions, values or []):
                out[pos] = value

        await asyncio.gather(*(fetch(i, p) for i, p in self._group(keys).items()))
        return out

    async def put_many(self, items: Sequence[tuple[bytes, Buffer]]) -> None:
        groups = self._group([key for key, _ in items])

        async def send(node: NodeClient, sub: list[tuple[bytes, Buffer]]) -> None:
            info = node.info or await node.ping()  # the server's limits
            # A value over the server's limit would get the whole batch refused: skip it
            # (an L2 may always decline to store).
            fits = [(k, v) for k, v in sub if memoryview(v).nbytes <= info.max_value_size_bytes]
            for batch in _batches(fits, info.max_request_size_bytes, info.max_batch_keys):
                await node.put_many(batch)

        async def store(idx: int, positions: list[int]) -> None:
            sub = [items[i] for i in positions]
            await self._on_node(idx, lambda n: send(n, sub))

        await asyncio.gather(*(store(i, p) for i, p in groups.items()))

    async def delete(self, keys: Sequence[bytes]) -> int:
        """Remove keys (an admin operation); returns how many existed on reachable nodes."""

        async def delete_on(idx: int, positions: list[int]) -> int:
            sub = [keys[j] for j in positions]
            return await self._on_node(idx, lambda n: n.delete(sub)) or 0

        counts = await asyncio.gather(*(delete_on(i, p) for i, p in self._group(keys).items()))
        return sum(counts)

    async def delete_many(self, keys: Sequence[bytes]) -> None:
        await self.delete(keys)

    async def stats(self) -> dict[str, dict[str, Any]]:
        """Each reachable server's STATS, by node id."""
        replies = await asyncio.gather(*(
            self._on_node(i, lambda n: n.stats()) for i in range(len(self.nodes))
        ))
        return {n.node_id: r for n, r in zip(self.nodes, replies, strict=True) if r is not None}

    async def ping(self) -> None:
        """Raise a TransportError unless at least one server answers."""
        await asyncio.gather(*(
            self._on_node(i, lambda n: n.ping()) for i in range(len(self.nodes))
        ))

    async def close(self) -> None:
        for node in self.nodes:
            await node.close()

    @property
    def shm_active(self) -> list[bool]:
        """Per node: whether reads go through shared memory."""
        return [node.shm is not None for node in self.nodes]
