"""Keep-alive HTTP/1.1 connections to backends: an asyncio.Protocol per connection.

Responses are parsed with ``httptools`` and delivered to a :class:`ResponseSink`
callback by callback, so bytes are forwarded the moment they arrive (no
buffering, no per-chunk coroutine). Every socket has TCP_NODELAY, so small SSE
events are not held back by Nagle's algorithm.

Deadlines: opening a connection has ``connect_timeout_s``; once a request is
written, the backend may stay silent at most ``read_timeout_s`` before its
first byte and between any two reads. A timeout closes the connection and
reports :class:`BackendTimeoutError` to the sink, so a hung backend can never
hang the router.
"""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict

import httptools

from kvmesh.common.errors import BackendTimeoutError, ProtocolError, TransportError
from kvmesh.router.endpoints import Endpoint

MAX_IDLE_PER_ENDPOINT = 64
"""Idle keep-alive connections kept per endpoint; extra ones are closed."""


class ResponseSink:
    """Receives one response. Subclasses override what they need."""

    def on_headers(self, status: int, headers: list[tuple[bytes, bytes]], chunked: bool) -> None:
        """Status line and headers are complete."""

    def on_body(self, data: bytes) -> None:
        """A piece of the (de-chunked) body."""

    def on_complete(self) -> None:
        """The whole response arrived."""

    def on_error(self, exc: TransportError) -> None:
        """The exchange failed; ``got_bytes`` on the connection says whether any response byte came."""

    def flush(self) -> None:
        """One read from the backend has been parsed (a sink may batch its writes until then)."""


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to one endpoint, carrying one exchange at a time."""

    def __init__(self, pool: UpstreamPool, endpoint: Endpoint) -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.reused = False
        """True once the connection has carried a complete exchange."""
        self.got_bytes = False
        """True once the current exchange received any response byte."""
        self.closed = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self._last_read = self.pool.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"bad HTTP response from backend: {exc}"))
            return
        if self.sink is not None:
            self.sink.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.sink is not None:
            self._fail(TransportError("backend closed the connection"))

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- httptools callbacks ----------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.sink is not None:
            chunked = any(n.lower() == b"transfer-encoding" for n, _ in self._headers)
            self.sink.on_headers(self.parser.get_status_code(), self._headers, chunked)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.on_body(body)

    def on_message_complete(self) -> None:
        sink, self.sink = self.sink, None
        self._cancel_timer()
        keep = self.parser.should_keep_alive()
        if sink is not None:
            sink.on_complete()
        if keep and not self.closed:
            self.reused = True
            self.pool.release(self)
        else:
            self.close()

    # -- exchange ------------------------------------------------------------
    def send(self, data: bytes, sink: ResponseSink) -> None:
        """Write a complete request and route its response to ``sink``."""
        assert self.transport is not None
        self.sink = sink
        self.got_bytes = False
        self.parser = httptools.HttpResponseParser(self)
        self._last_read = self.pool.loop.time()
        self._timer = self.pool.loop.call_later(self.pool.read_timeout_s, self._check_timeout)
        self.transport.write(data)

    def _check_timeout(self) -> None:
        idle = self.pool.loop.time() - self._last_read
        if idle >= self.pool.read_timeout_s:
            self._timer = None
            self._fail(BackendTimeoutError(f"backend silent for {self.pool.read_timeout_s:.1f}s"))
        else:
            self._timer = self.pool.loop.call_later(self.pool.read_timeout_s - idle, self._check_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, exc: TransportError) -> None:
        sink, self.sink = self.sink, None
        self.close()
        if sink is not None:
            sink.on_error(exc)

    def close(self) -> None:
        """Close the socket; the connection is never reused."""
        self._cancel_timer()
        self.closed = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """The router's one shared client: keep-alive connections per endpoint."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, connect_timeout_s: float,
                 read_timeout_s: float) -> None:
        self.loop = loop
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._idle: dict[str, list[UpstreamConnection]] = defaultdict(list)
        self._all: set[UpstreamConnection] = set()

    def idle(self, endpoint: Endpoint) -> UpstreamConnection | None:
        """An idle keep-alive connection to ``endpoint``, if there is one (no I/O)."""
        idle = self._idle.get(endpoint.url)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def acquire(self, endpoint: Endpoint) -> UpstreamConnection:
        """An idle connection to ``endpoint``, or a new one; ``TransportError`` if unreachable."""
        conn = self.idle(endpoint)
        if conn is not None:
            return conn
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: UpstreamConnection(self, endpoint),
                                            endpoint.host, endpoint.port),
                self.connect_timeout_s)
        except asyncio.TimeoutError as exc:
            raise BackendTimeoutError(f"connect timed out after {self.connect_timeout_s:.1f}s") from exc
        except OSError as exc:
            raise TransportError(f"connect failed: {exc.strerror or exc}") from exc
        self._all.add(conn)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        idle = self._idle[conn.endpoint.url]
        if len(idle) < MAX_IDLE_PER_ENDPOINT:
            idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: UpstreamConnection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.endpoint.url)
        if idle and conn in idle:
            idle.remove(conn)

    def drop_endpoint(self, url: str) -> None:
        """Close every idle connection to an endpoint that left."""
        for conn in list(self._idle.pop(url, [])):
            conn.close()

    def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()


class _Collect(ResponseSink):
    def __init__(self, fut: asyncio.Future[tuple[int, bytes]]) -> None:
        self.fut = fut
        self.status = 0
        self.parts: list[bytes] = []

    def on_headers(self, status: int, headers: list[tuple[bytes, bytes]], chunked: bool) -> None:
        self.status = status

    def on_body(self, data: bytes) -> None:
        self.parts.append(data)

    def on_complete(self) -> None:
        if not self.fut.done():
            self.fut.set_result((self.status, b"".join(self.parts)))

    def on_error(self, exc: TransportError) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


async def simple_get(pool: UpstreamPool, endpoint: Endpoint, path: str) -> tuple[int, bytes]:
    """``GET path`` on ``endpoint`` through the pool: (status, body). Raises ``TransportError``."""
    conn = await pool.acquire(endpoint)
    fut: asyncio.Future[tuple[int, bytes]] = pool.loop.create_future()
    request = (f"GET {path} HTTP/1.1\r\nHost: {endpoint.host}:{endpoint.port}\r\n"
               "Accept: application/json\r\n\r\n").encode()
    conn.send(request, _Collect(fut))
    try:
        return await fut
    except asyncio.CancelledError:
        conn.close()  # abandoned mid-exchange (a caller's deadline): never reuse it
        raise
