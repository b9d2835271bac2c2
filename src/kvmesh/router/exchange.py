"""One backend response forwarded to one client, callback by callback.

The :class:`Exchange` is the upstream connection's :class:`ResponseSink`: the
status line and headers are re-framed and written to the client the moment they
are parsed (the "first byte"), body pieces are written as they arrive (chunked
bodies re-framed 1:1), and a failure is reported either *before* the first byte
(the proxy may retry elsewhere) or *after* it (the stream is ended cleanly).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kvmesh.common.errors import TransportError
from kvmesh.common.openai_protocol import sse_error_event
from kvmesh.router.http_server import STATUS_TEXT, ClientConnection
from kvmesh.router.upstream import ResponseSink, UpstreamConnection

# Hop-by-hop and framing headers: never copied between the two connections.
SKIP_REQUEST_HEADERS = frozenset({b"host", b"content-length", b"connection", b"keep-alive",
                                  b"transfer-encoding", b"expect", b"te", b"upgrade", b"proxy-connection",
                                  b"proxy-authorization"})
SKIP_RESPONSE_HEADERS = frozenset({b"content-length", b"connection", b"keep-alive", b"transfer-encoding",
                                   b"server"})


class Exchange(ResponseSink):
    """Forwards one backend response to the client as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: ClientConnection,
                 upstream: UpstreamConnection, start: float) -> None:
        self.loop = loop
        self.client = client
        self.upstream = upstream
        self.start = start
        self.first: asyncio.Future[bool] = loop.create_future()
        """True once bytes reached the client; False if the exchange failed before that."""
        self.done: asyncio.Future[None] = loop.create_future()
        self.error: TransportError | None = None
        self.status = 0
        self.ttft_s: float | None = None
        self.chunked_out = False
        self.sse = False
        self.broken = False
        self.client_gone = False
        """The client left mid-response: not the backend's fault."""
        self.on_finished: Callable[[Exchange], None] | None = None
        """Called once when the exchange ends (the proxy's task-free fast path)."""
        self._out: list[bytes] = []

    def on_headers(self, status: int, headers: list[tuple[bytes, bytes]], chunked: bool) -> None:
        self.status = status
        out = [b"HTTP/1.1 %d %s\r\n" % (status, STATUS_TEXT.get(status, "Status").encode())]
        length = None
        for name, value in headers:
            lname = name.lower()
            if lname in SKIP_RESPONSE_HEADERS:
                if lname == b"content-length":
                    length = value
                continue
            if lname == b"content-type" and value.startswith(b"text/event-stream"):
                self.sse = True
            out.append(b"%s: %s\r\n" % (name, value))
        if length is not None:
            out.append(b"Content-Length: %s\r\n\r\n" % length)
        else:
            self.chunked_out = True
            out.append(b"Transfer-Encoding: chunked\r\n\r\n")
        self._out.append(b"".join(out))
        self.client.on_writable = self._on_writable
        self.client.on_lost = self._client_lost
        self.first.set_result(True)

    def _client_lost(self) -> None:
        self.client_gone = True
        self.upstream.close()  # stop the backend's work for nobody

    def _on_writable(self, writable: bool) -> None:
        if writable:
            self.upstream.resume_reading()
        else:
            self.upstream.pause_reading()

    def on_body(self, data: bytes) -> None:
        if self.ttft_s is None:
            self.ttft_s = self.loop.time() - self.start
        self._out.append(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked_out else data)

    def flush(self) -> None:
        """Write what this read produced as one send: the head and the first body piece
        leave together, so the client wakes once (TCP_NODELAY sends every write at once)."""
        if self._out:
            self.client.write(self._out[0] if len(self._out) == 1 else b"".join(self._out))
            self._out.clear()

    def on_complete(self) -> None:
        if not self.first.done():  # a body-less response (HEAD-like); treat as delivered
            self.first.set_result(True)
        if self.chunked_out:
            self._out.append(b"0\r\n\r\n")
        self.flush()
        self.done.set_result(None)
        if self.on_finished is not None:
            self.on_finished(self)

    @property
    def delivered(self) -> bool:
        """True once response bytes reached the client (no retry possible after that)."""
        return self.first.done() and self.first.result()

    def on_error(self, exc: TransportError) -> None:
        self.error = exc
        if not self.first.done():
            self.first.set_result(False)
        else:
            self.broken = True
            if self.chunked_out:
                if self.sse:
                    event = sse_error_event("the backend failed mid-stream")
                    self._out.append(b"%x\r\n%s\r\n" % (len(event), event))
                self._out.append(b"0\r\n\r\n")
            self.flush()
        if not self.done.done():
            self.done.set_result(None)
            if self.on_finished is not None:
                self.on_finished(self)
