"""The asyncio server of ``kvmesh store``: one task per connection, raw sockets.

Raw non-blocking sockets with ``loop.sock_recv_into`` / ``sock_sendall`` (not
streams) so that value bytes move between the socket and the shared-memory
arena without a user-space copy: PUT values are received straight into their
arena block, GET values are sent straight out of it while the entry is pinned.

A connection serves one request at a time. Any protocol violation gets an
error reply and the connection is closed; other connections are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, start_http_server

from kvmesh.common.errors import ProtocolError, VersionMismatchError
from kvmesh.store.config import StoreConfig
from kvmesh.store.engine import Readable, TieredStore
from kvmesh.store.metrics import StoreMetrics
from kvmesh.store.protocol import (
    AUTH_DIGEST_SIZE,
    FLAG_NO_REPLY,
    HEADER_SIZE,
    KEY_SIZE,
    MISS,
    PROTOCOL_VERSION,
    PUT_ENTRY,
    Header,
    Op,
    PutResult,
    ServerInfo,
    Status,
    error_frame,
    pack_lease_table,
    pack_u64s,
    unpack_header,
    unpack_keys,
    unpack_put_table,
    unpack_u64s,
)
from kvmesh.store.shm import host_id

log = logging.getLogger(__name__)
_SCRATCH_SIZE = 1 << 20
_LINGER_BYTES = 4 << 20
_LINGER_S = 0.5


class _Reject(Exception):
    """A request that gets an error reply, after which the connection closes."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Closed(Exception):
    """The peer closed the connection."""


async def recv_exact(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, view: memoryview
) -> None:
    """Fill ``view`` from ``sock``; ``_Closed`` on EOF."""
    while view.nbytes:
        got = await loop.sock_recv_into(sock, view)
        if got == 0:
            raise _Closed
        view = view[got:]


class Connection:
    """One client connection: reads headers, validates them, dispatches by opcode."""

    def __init__(self, server: StoreServer, sock: socket.socket) -> None:
        self.server = server
        self.store = server.store
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.authed = server.config.auth_token is None
        self.busy = False
        """True while a request is being handled (shutdown waits for it)."""
        self._header = bytearray(HEADER_SIZE)
        self.handlers: dict[int, Callable[[Header], Awaitable[None]]] = {
            Op.PING: self._ping, Op.STATS: self._stats, Op.PUT_MANY: self._put_many,
            Op.GET_MANY: self._get_many, Op.EXISTS_PREFIX: self._exists_prefix,
            Op.DELETE: self._delete, Op.AUTH: self._auth,
        }
        if self.store.config.shm_enabled:
            self.handlers[Op.LEASE_MANY] = self._lease_many
            self.handlers[Op.RELEASE] = self._release

    async def serve(self) -> None:
        """Handle requests until the peer leaves, misbehaves, or the server stops."""
        try:
            while not self.server.stopping:
                if not await self._one_request():
                    break
        except (_Closed, ConnectionError, OSError):
            pass
        finally:
            self.sock.close()

    async def _one_request(self) -> bool:
        await recv_exact(self.loop, self.sock, memoryview(self._header))
        self.busy = True
        op = self._header[6]
        started = time.perf_counter()
        try:
            header = unpack_header(self._header)
            self._check(header)
            await self.handlers[header.op](header)
        except _Reject as exc:
            await self._fail(op, exc.status, str(exc))
            return False
        except VersionMismatchError as exc:
            await self._fail(op, Status.VERSION_MISMATCH, str(exc))
            return False
        except ProtocolError as exc:
            await self._fail(op, Status.MALFORMED, str(exc))
            return False
        except (_Closed, OSError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a server bug: tell this client, keep serving the others
            log.exception("internal error handling opcode %d", op)
            await self._fail(op, Status.INTERNAL, f"internal error: {type(exc).__name__}")
            return False
        finally:
            self.busy = False
        name = Op(op).name
        self.server.metrics.ops.labels(name).inc()
        self.server.metrics.latency.labels(name).observe(time.perf_counter() - started)
        return True

    async def _fail(self, op: int, status: Status, message: str) -> None:
        self.server.metrics.errors.labels(status.name).inc()
        with contextlib.suppress(OSError):
            await self.loop.sock_sendall(self.sock, error_frame(op, status, message))
            if self.authed:
                await self._linger()

    async def _linger(self) -> None:
        """Half-close, then discard what the peer already sent, so that closing does not
        reset the connection and destroy the error reply before the peer reads it.
        Bounded in bytes and time; never done for unauthenticated peers."""
        self.sock.shutdown(socket.SHUT_WR)
        scratch = memoryview(self.server.scratch)
        budget = _LINGER_BYTES
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(_LINGER_S):
                while budget > 0 and (got := await self.loop.sock_recv_into(self.sock, scratch)):
                    budget -= got

    def _check(self, header: Header) -> None:
        """Validate a header before reading any of its body."""
        config = self.server.config
        if not self.authed and header.op != Op.AUTH:
            raise _Reject(Status.AUTH_FAILED, "authentication required")
        if header.op not in self.handlers:
            raise _Reject(Status.UNKNOWN_OP, f"unknown opcode {header.op}")
        if header.count > config.max_batch_keys:
            raise _Reject(Status.TOO_LARGE, f"count {header.count} > {config.max_batch_keys}")
        if header.body_len > config.max_request_size_bytes:
            raise _Reject(Status.TOO_LARGE, f"body of {header.body_len} bytes is too large")
        expected = _FIXED_BODY[header.op](header.count)
        if expected is not None and header.body_len != expected:
            raise _Reject(Status.MALFORMED, f"{Op(header.op).name}: body_len {header.body_len} "
                                            f"!= {expected}")

    async def _read_body(self, header: Header) -> bytearray:
        body = bytearray(header.body_len)
        await recv_exact(self.loop, self.sock, memoryview(body))
        return body

    async def _reply(self, header: Header, count: int = 0, body: bytes = b"") -> None:
        out = Header(op=header.op, count=count, body_len=len(body)).pack()
        await self.loop.sock_sendall(self.sock, out + body)

    # -- handlers ------------------------------------------------------------------------

    async def _auth(self, header: Header) -> None:
        digest = await self._read_body(header)
        token = self.server.config.auth_token
        expected = hashlib.sha256(token.encode()).digest() if token else bytes(AUTH_DIGEST_SIZE)
        if not hmac.compare_digest(bytes(digest), expected):
            raise _Reject(Status.AUTH_FAILED, "bad auth token")
        self.authed = True
        await self._reply(header)

    async def _ping(self, header: Header) -> None:
        await self._reply(header, body=self.server.info().to_json())

    async def _stats(self, header: Header) -> None:
        await self._reply(header, body=json.dumps(self.store.stats()).encode())

    async def _exists_prefix(self, header: Header) -> None:
        keys = unpack_keys(await self._read_body(header), header.count)
        await self._reply(header, count=self.store.exists_prefix(keys))

    async def _delete(self, header: Header) -> None:
        keys = unpack_keys(await self._read_body(header), header.count)
        await self._reply(header, count=self.store.delete(keys))

    async def _get_many(self, header: Header) -> None:
        keys = unpack_keys(await self._read_body(header), header.count)
        readables: list[Readable | None] = []
        try:
            for key in keys:  # appended one by one so that `finally` unpins every pin taken
                readables.append(self.store.get_pinned(key))
            lengths = [MISS if r is None else r.view.nbytes for r in readables]
            table = pack_u64s(lengths)
            body_len = len(table) + sum(n for n in lengths if n != MISS)
            out = Header(op=header.op, count=len(keys), body_len=body_len).pack()
            await self.loop.sock_sendall(self.sock, out + table)
            for readable in readables:
                if readable is not None:  # straight from the arena, no copy
                    await self.loop.sock_sendall(self.sock, readable.view)
        finally:
            self.store.done(readables)

    async def _lease_many(self, header: Header) -> None:
        keys = unpack_keys(await self._read_body(header), header.count)
        lease_id, rows = self.store.lease(keys)
        await self._reply(header, count=len(keys), body=pack_lease_table(lease_id, rows))

    async def _release(self, header: Header) -> None:
        ids = unpack_u64s(await self._read_body(header), header.count)
        released = self.store.release(ids)
        if not header.flags & FLAG_NO_REPLY:
            await self._reply(header, count=released)

    async def _put_many(self, header: Header) -> None:
        config = self.server.config
        table_len = header.count * PUT_ENTRY.size
        if header.body_len < table_len:
            raise _Reject(Status.MALFORMED, "PUT_MANY body shorter than its table")
        table = bytearray(table_len)
        await recv_exact(self.loop, self.sock, memoryview(table))
        rows = unpack_put_table(table, header.count)
        if table_len + sum(length for _, length in rows) != header.body_len:
            raise _Reject(Status.MALFORMED, "PUT_MANY value lengths do not add up to body_len")
        if any(length > config.max_value_size_bytes for _, length in rows):
            raise _Reject(Status.TOO_LARGE, f"a value exceeds {config.max_value_size_bytes} bytes")
        results = bytearray()
        for key, length in rows:
            results.append(await self._put_one(key, length))
        stored = results.count(PutResult.STORED)
        await self._reply(header, count=stored, body=bytes(results))

    async def _put_one(self, key: bytes, length: int) -> int:
        target = self.store.begin_put(key, length)
        if isinstance(target, PutResult):  # present or refused: consume and drop the bytes
            await self._discard(length)
            return target
        try:
            await recv_exact(self.loop, self.sock, self.store.receive_view(target))
        except BaseException:
            self.store.abort_put(target)
            raise
        return self.store.finish_put(key, target)

    async def _discard(self, length: int) -> None:
        scratch = memoryview(self.server.scratch)
        while length:
            chunk = min(length, len(scratch))
            await recv_exact(self.loop, self.sock, scratch[:chunk])
            length -= chunk


def _keys_body(count: int) -> int:
    return count * KEY_SIZE


_FIXED_BODY: dict[int, Callable[[int], int | None]] = {
    Op.AUTH: lambda count: AUTH_DIGEST_SIZE if count == 0 else -1,
    Op.PING: lambda count: 0,
    Op.STATS: lambda count: 0,
    Op.GET_MANY: _keys_body,
    Op.LEASE_MANY: _keys_body,
    Op.EXISTS_PREFIX: _keys_body,
    Op.DELETE: _keys_body,
    Op.RELEASE: lambda count: count * 8,
    Op.PUT_MANY: lambda count: None,  # variable: checked against its table
}
"""Body length each opcode must announce for a given count (None: variable)."""


class StoreServer:
    """Listener, connections, lease expiry and metrics of one store process."""

    def __init__(self, config: StoreConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.store = TieredStore(config)
        self.metrics = StoreMetrics(self.registry, self.store)
        self.scratch = bytearray(_SCRATCH_SIZE)
        self.stopping = False
        self.port = config.port
        self._host_id = host_id()
        self._listener: socket.socket | None = None
        self._tasks: dict[asyncio.Task[None], Connection] = {}
        self._stop = asyncio.Event()

    def info(self) -> ServerInfo:
        """The PING reply: identity, limits, and where same-host clients find the values."""
        arena, config = self.store.arena, self.config
        shm = config.shm_enabled
        return ServerInfo(
            protocol_version=PROTOCOL_VERSION, server_id=f"{config.host}:{self.port}",
            host_id=self._host_id, shm_path=str(arena.path) if shm else None,
            shm_size=arena.size if shm else 0, shm_nonce=arena.nonce.hex() if shm else None,
            max_value_size_bytes=config.max_value_size_bytes,
            max_request_size_bytes=config.max_request_size_bytes,
            max_batch_keys=config.max_batch_keys,
        )

    async def start(self) -> None:
        """Bind the listener (and the metrics port); returns once connections are accepted."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        sock.listen(512)
        sock.setblocking(False)
        self._listener = sock
        self.port = sock.getsockname()[1]
        if self.config.metrics_port is not None:
            self._metrics_http = start_http_server(
                self.config.metrics_port, addr=self.config.host, registry=self.registry
            )
        loop = asyncio.get_running_loop()
        self._accept_task = loop.create_task(self._accept_loop())
        self._expiry_task = loop.create_task(self._expiry_loop())

    async def _accept_loop(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while not self.stopping:
            conn_sock, _ = await loop.sock_accept(self._listener)
            conn_sock.setblocking(False)
            conn_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, conn_sock)
            task = loop.create_task(conn.serve())
            self._tasks[task] = conn
            self.metrics.connections.inc()
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self.metrics.connections.dec()

    async def _expiry_loop(self) -> None:
        interval = min(1.0, self.config.lease_ttl_s / 4)
        while True:
            await asyncio.sleep(interval)  # a periodic timer, not a readiness wait
            self.store.expire_leases()

    def request_stop(self) -> None:
        """Begin a graceful shutdown (the SIGTERM handler)."""
        self.stopping = True
        self._stop.set()

    async def serve_until_stopped(self) -> None:
        """Run until SIGTERM/SIGINT or :meth:`request_stop`, then shut down gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, let busy requests finish within the grace period, then release all."""
        self.stopping = True
        self._accept_task.cancel()
        self._expiry_task.cancel()
        if self._listener is not None:
            self._listener.close()
        for task, conn in list(self._tasks.items()):
            if not conn.busy:  # idle in a header read: nothing to finish
                task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.shutdown_grace_s)
        leftover = list(self._tasks)
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
        if getattr(self, "_metrics_http", None) is not None:
            self._metrics_http[0].shutdown()
        self.store.close()
        log.info("kvmesh store on port %d stopped", self.port)
