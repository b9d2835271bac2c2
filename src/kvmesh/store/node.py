"""A client of one store server: a small connection pool plus the shared-memory path.

Every new connection authenticates (if a token is set) and sends PING. If the
reply announces a segment on this host and the client can map it and finds the
announced nonce there, reads go through leases and shared memory; otherwise
(another host, another container, no permission) they silently use TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from kvmesh.common.errors import BackendUnavailableError, ProtocolError
from kvmesh.kvcache.l2.base import Buffer
from kvmesh.store.bufpool import BufferPool
from kvmesh.store.connection import NodeConnection
from kvmesh.store.protocol import (
    FLAG_NO_REPLY,
    MISS,
    NOT_LEASED,
    Op,
    ServerInfo,
    pack_keys,
    pack_put_table,
    pack_u64s,
    unpack_lease_table,
    unpack_u64s,
)
from kvmesh.store.shm import ShmReader, host_id


@dataclass(frozen=True)
class NodeOptions:
    """How to reach and use one server."""

    host: str
    """Server address."""
    port: int
    """Server port."""
    token: str | None = None
    """Shared auth token, or None."""
    pool_size: int = 4
    """Most concurrent requests (connections) to this server."""
    connect_timeout_s: float = 2.0
    """Deadline for opening a connection (requests themselves have none, see L2Backend)."""
    use_shm: bool = True
    """Use the shared-memory path when the server is on this host."""


def _buffers(lengths: Sequence[int], pool: BufferPool) -> list[memoryview | None]:
    """A caller-owned, uninitialised buffer per hit (no zero-fill, recycled memory)."""
    return [None if n == MISS else pool.take(n) for n in lengths]


class NodeClient:
    """Requests to one server over pooled connections."""

    def __init__(self, options: NodeOptions, pool: BufferPool | None = None) -> None:
        self.options = options
        self.pool = pool if pool is not None else BufferPool(0)
        self.node_id = f"{options.host}:{options.port}"
        self.info: ServerInfo | None = None
        self.shm: ShmReader | None = None
        self._idle: list[NodeConnection] = []
        self._slots = asyncio.Semaphore(options.pool_size)
        self._closed = False

    async def close(self) -> None:
        """Close every idle connection and unmap shared memory (idempotent).

        Connections in use are closed when their request ends.
        """
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        if self.shm is not None:
            self.shm.close()
            self.shm = None

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[NodeConnection]:
        """A ready connection; broken or interrupted ones are closed, never pooled."""
        if self._closed:
            raise BackendUnavailableError(f"client of {self.node_id} is closed")
        async with self._slots:
            conn = self._take_idle() or await self._open()
            try:
                yield conn
            except BaseException:
                conn.close()  # cancelled or failed mid-request: stream position unknown
                raise
            if conn.broken or self._closed:
                conn.close()
            else:
                self._idle.append(conn)

    def _take_idle(self) -> NodeConnection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.stale():
                return conn
            conn.close()
        return None

    async def _open(self) -> NodeConnection:
        """Connect, authenticate, and PING.

        Every new connection re-reads the PING reply: after a server restart the
        shared-memory segment is a new one, and reading leases through the old
        mapping would return stale bytes.
        """
        opts = self.options
        conn = await NodeConnection.open(opts.host, opts.port, opts.connect_timeout_s)
        try:
            if opts.token is not None:
                await conn.call(Op.AUTH, 0, [hashlib.sha256(opts.token.encode()).digest()])
            _, body = await conn.call(Op.PING)
            info = ServerInfo.from_json(body)
            if info != self.info:
                self._setup(info)
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, info: ServerInfo) -> None:
        self.info = info
        if self.shm is not None:
            self.shm.close()
            self.shm = None
        if not self.options.use_shm or info.shm_path is None or info.host_id != host_id():
            return
        try:
            self.shm = ShmReader(info.shm_path, info.shm_size, bytes.fromhex(info.shm_nonce or ""))
        except (OSError, ValueError):
            self.shm = None  # same host id but not our memory (container): TCP it is

    async def ping(self) -> ServerInfo:
        """The server's PING reply."""
        async with self._conn() as conn:
            _, body = await conn.call(Op.PING)
        return ServerInfo.from_json(body)

    async def stats(self) -> dict[str, Any]:
        """The server's STATS reply."""
        async with self._conn() as conn:
            _, body = await conn.call(Op.STATS)
        return json.loads(body)

    async def exists_prefix(self, keys: Sequence[bytes]) -> int:
        async with self._conn() as conn:
            header, _ = await conn.call(Op.EXISTS_PREFIX, len(keys), [pack_keys(keys)])
        return header.count

    async def delete(self, keys: Sequence[bytes]) -> int:
        async with self._conn() as conn:
            header, _ = await conn.call(Op.DELETE, len(keys), [pack_keys(keys)])
        return header.count

    async def put_many(self, items: Sequence[tuple[bytes, Buffer]]) -> bytes:
        """Store a batch; one result byte (:class:`PutResult`) per item."""
        table = pack_put_table([(k, memoryview(v).nbytes) for k, v in items])
        async with self._conn() as conn:
            await conn.send(Op.PUT_MANY, len(items), [table, *(v for _, v in items)])
            header = await conn.recv_header(Op.PUT_MANY)
            return bytes(await conn.recv_body(header.body_len))

    async def get_many(self, keys: Sequence[bytes]) -> list[Buffer | None]:
        """Each key's value or None, through shared memory when possible."""
        async with self._conn() as conn:
            # Decide only now: opening this connection may have found a restarted
            # server with a new segment, and offsets must be read in the segment
            # of the server that granted them.
            shm = self.shm
            if shm is None:
                return await self._get_tcp(conn, keys)
            out, unleased = await self._get_leased(conn, shm, keys)
            if unleased:  # present but not pinnable in shared memory: fetch those over TCP
                fetched = await self._get_tcp(conn, [keys[i] for i in unleased])
                for i, value in zip(unleased, fetched):
                    out[i] = value
        return out

    async def _get_tcp(self, conn: NodeConnection, keys: Sequence[bytes]) -> list[Buffer | None]:
        await conn.send(Op.GET_MANY, len(keys), [pack_keys(keys)])
        header = await conn.recv_header(Op.GET_MANY)
        if header.count != len(keys):
            conn.close()
            raise ProtocolError("GET_MANY reply has the wrong count")
        lengths = unpack_u64s(await conn.recv_body(8 * len(keys)), len(keys))
        out = _buffers(lengths, self.pool)
        for dest in out:
            if dest is not None:
                await conn.recv_into(dest)
        return list(out)

    async def _get_leased(
        self, conn: NodeConnection, shm: ShmReader, keys: Sequence[bytes]
    ) -> tuple[list[Buffer | None], list[int]]:
        """Values copied out of shared memory, and the positions that must go over TCP."""
        header, body = await conn.call(Op.LEASE_MANY, len(keys), [pack_keys(keys)])
        lease_id, rows = unpack_lease_table(body, header.count)
        lengths = [MISS if offset == NOT_LEASED else length for offset, length in rows]
        out: list[Buffer | None] = list(_buffers(lengths, self.pool))
        view = shm.view
        for dest, (offset, length) in zip(out, rows):
            if dest is not None:
                dest[:] = view[offset:offset + length]  # type: ignore[index]  # the one copy
        if lease_id:  # no reply, so no round trip: the next request can follow at once
            await conn.send(Op.RELEASE, 1, [pack_u64s([lease_id])], flags=FLAG_NO_REPLY)
        return out, [i for i, (offset, _) in enumerate(rows) if offset == NOT_LEASED]
