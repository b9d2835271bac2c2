"""A minimal HTTP/1.1 server on asyncio.Protocol + httptools, built for low overhead.

Frameworks cost the router more CPU per request than its whole budget, so the
router parses requests itself: one :class:`ClientConnection` per socket, one
request at a time (pipelined requests wait their turn; reading pauses while a
request is in flight), keep-alive by default, TCP_NODELAY on every socket.

The application is one callable, ``handler(request, connection)``, that
answers by writing raw response bytes with :meth:`ClientConnection.write` and
calling :meth:`ClientConnection.finish` exactly once. It may answer
synchronously or start a task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httptools

from kvmesh.common.openai_protocol import error_body
from kvmesh.router.upstream import set_nodelay

STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
               413: "Payload Too Large", 502: "Bad Gateway", 503: "Service Unavailable",
               504: "Gateway Timeout"}


@dataclass(slots=True)
class HttpRequest:
    """One parsed request."""

    method: str
    path: str
    """The path without query string."""
    headers: list[tuple[bytes, bytes]]
    """Raw header pairs, in order, names as sent."""
    body: bytes
    keep_alive: bool
    too_large: bool = False
    """The body exceeded the server's limit (``body`` is then empty)."""

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (``name`` lower-case)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


Handler = Callable[[HttpRequest, "ClientConnection"], None]


def simple_response(status: int, body: bytes, *, content_type: bytes = b"application/json",
                    keep_alive: bool = True) -> bytes:
    """A complete response with a Content-Length body."""
    head = (f"HTTP/1.1 {status} {STATUS_TEXT.get(status, 'Status')}\r\n"
            f"Content-Length: {len(body)}\r\n").encode()
    conn = b"" if keep_alive else b"Connection: close\r\n"
    return head + b"Content-Type: " + content_type + b"\r\n" + conn + b"\r\n" + body


class ClientConnection(asyncio.Protocol):
    """One client socket."""

    def __init__(self, handler: Handler, max_body_bytes: int) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.busy = False
        self.write_paused = False
        self.read_paused = False
        self.on_writable: Callable[[bool], None] | None = None
        """Called with True/False when the client socket's buffer fills/drains (back-pressure)."""
        self.on_lost: Callable[[], None] | None = None
        """Called if the client goes away while a request is being answered."""
        self._queue: deque[HttpRequest] = deque()
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_len = 0
        self._keep_alive = True

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError:
            self._reject(400, "malformed HTTP request")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._queue.clear()
        if self.busy and self.on_lost is not None:
            self.on_lost()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.on_writable is not None:
            self.on_writable(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.on_writable is not None:
            self.on_writable(True)

    # -- httptools callbacks ----------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._body_len = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        # curl and others wait (1 s) for this before sending a large body.
        for name, value in self._headers:
            if name.lower() == b"expect" and value.lower() == b"100-continue":
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_len += len(body)
        if self._body_len <= self.max_body_bytes:
            self._body.append(body)

    def on_message_complete(self) -> None:
        path = self._url.split(b"?", 1)[0].decode("latin-1")
        too_large = self._body_len > self.max_body_bytes
        request = HttpRequest(self.parser.get_method().decode("latin-1"), path, self._headers,
                              b"" if too_large else b"".join(self._body),
                              self.parser.should_keep_alive(), too_large)
        if self.busy:
            # Pipelined: hold further input until the queue drains.
            self._queue.append(request)
            if self.transport is not None and not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()
        else:
            self._dispatch(request)

    # -- answering ---------------------------------------------------------
    def _dispatch(self, request: HttpRequest) -> None:
        self.busy = True
        self._keep_alive = request.keep_alive
        self.handler(request, self)

    def write(self, data: bytes) -> None:
        """Send bytes to the client now (no-op once it has gone)."""
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def finish(self, *, close: bool = False) -> None:
        """The current response is complete; start the next queued request."""
        self.busy = False
        self.on_writable = None
        self.on_lost = None
        if self.closed or self.transport is None:
            return
        if close or not self._keep_alive:
            self.close()
            return
        if self._queue:
            self._dispatch(self._queue.popleft())
        elif self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def respond(self, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
        """Write a complete response and finish."""
        self.write(simple_response(status, body, content_type=content_type, keep_alive=self._keep_alive))
        self.finish()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _reject(self, status: int, message: str) -> None:
        self.write(simple_response(status, error_body(message), keep_alive=False))
        self.close()


async def start_server(handler: Handler, host: str, port: int, *, max_body_bytes: int,
                       backlog: int = 1024) -> asyncio.Server:
    """Listen on ``host:port`` (0: any free port) and serve with ``handler``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: ClientConnection(handler, max_body_bytes),
                                    host, port, backlog=backlog, reuse_address=True)
