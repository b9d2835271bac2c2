"""One client connection to one store server, speaking the binary protocol.

Like the server, it uses raw non-blocking sockets so that reply values are
received with ``recv_into`` straight into the buffers handed to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Sequence

from kvmesh.common.errors import (
    AuthError,
    BackendTimeoutError,
    KvmeshError,
    ProtocolError,
    TransportError,
    VersionMismatchError,
)
from kvmesh.kvcache.l2.base import Buffer
from kvmesh.store.protocol import (
    HEADER_SIZE,
    MAX_ERROR_BODY,
    PROTOCOL_VERSION,
    Header,
    Op,
    Status,
    unpack_header,
)


def _protocol_error(header: Header, message: str) -> KvmeshError:
    name = Status(header.status).name if header.status in Status._value2member_map_ else "?"
    return ProtocolError(f"kvmesh store error {name}: {message}")


_STATUS_ERRORS: dict[int, Callable[[Header, str], KvmeshError]] = {
    Status.VERSION_MISMATCH: lambda header, _message: VersionMismatchError(
        "kvmesh store protocol", PROTOCOL_VERSION, header.version),
    Status.AUTH_FAILED: lambda _header, message: AuthError(
        f"kvmesh store refused credentials: {message}"),
}
"""Error replies that map to a more specific exception than ProtocolError."""


class NodeConnection:
    """A TCP connection that carries one request at a time (the caller serialises)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._header = bytearray(HEADER_SIZE)
        self.broken = False
        """Set after any failure: the stream position is unknown, so never reuse it."""

    @classmethod
    async def open(cls, host: str, port: int, timeout_s: float) -> NodeConnection:
        """Connect; ``TransportError`` if the server cannot be reached in time."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout_s)
        except TimeoutError:
            sock.close()
            raise BackendTimeoutError(f"connect to {host}:{port} timed out") from None
        except OSError as exc:
            sock.close()
            raise TransportError(f"connect to {host}:{port}: {exc}") from exc
        return cls(sock)

    def stale(self) -> bool:
        """True if the server closed this (idle) connection, e.g. because it restarted."""
        try:
            self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False  # nothing to read: the normal state of an idle connection
        except OSError:
            return True
        return True  # EOF, or bytes nobody asked for: unusable either way

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.broken = True
        with contextlib.suppress(OSError):
            self._sock.close()

    async def send(self, op: Op, count: int, parts: Sequence[Buffer], flags: int = 0) -> None:
        """Send one request: header, then the body parts in order (each without a copy)."""
        body_len = sum(memoryview(p).nbytes for p in parts)
        header = Header(op=op, count=count, body_len=body_len, flags=flags).pack()
        try:
            small = [bytes(p) for p in parts if memoryview(p).nbytes < 65536]
            if len(small) == len(parts):  # one syscall for small requests
                await self._loop.sock_sendall(self._sock, header + b"".join(small))
                return
            await self._loop.sock_sendall(self._sock, header)
            for part in parts:
                await self._loop.sock_sendall(self._sock, part)
        except OSError as exc:
            self.close()
            raise TransportError(f"send failed: {exc}") from exc

    async def recv_header(self, op: Op) -> Header:
        """Read a reply header; raise the matching error for an error reply."""
        await self.recv_into(memoryview(self._header))
        try:
            header = unpack_header(self._header)
        except ProtocolError:
            self.close()
            raise
        if header.status != Status.OK:
            await self._raise_error(header)
        if header.op != op:
            self.close()
            raise ProtocolError(f"reply to opcode {header.op}, expected {int(op)}")
        return header

    async def _raise_error(self, header: Header) -> None:
        message = ""
        if header.body_len <= MAX_ERROR_BODY:
            body = bytearray(header.body_len)
            with contextlib.suppress(TransportError):
                await self.recv_into(memoryview(body))
            message = body.decode("utf-8", "replace")
        self.close()
        make = _STATUS_ERRORS.get(header.status, _protocol_error)
        raise make(header, message)

    async def recv_into(self, view: memoryview) -> None:
        """Fill ``view`` from the socket; ``TransportError`` if the connection ends first."""
        try:
            while view.nbytes:
                got = await self._loop.sock_recv_into(self._sock, view)
                if got == 0:
                    raise TransportError("server closed the connection")
                view = view[got:]
        except OSError as exc:
            self.close()
            raise TransportError(f"receive failed: {exc}") from exc
        except TransportError:
            self.close()
            raise

    async def recv_body(self, length: int) -> bytearray:
        """Read ``length`` body bytes into a new buffer."""
        body = bytearray(length)
        await self.recv_into(memoryview(body))
        return body

    async def call(
        self, op: Op, count: int = 0, parts: Sequence[Buffer] = ()
    ) -> tuple[Header, bytearray]:
        """A request whose whole reply body is read into memory (small replies only)."""
        await self.send(op, count, parts)
        header = await self.recv_header(op)
        return header, await self.recv_body(header.body_len)
