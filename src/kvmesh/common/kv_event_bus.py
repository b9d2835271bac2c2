"""KV events over ZeroMQ pub/sub: workers publish, routers subscribe.

Transport layout (one ZeroMQ multipart message per batch)::

    frame 0: KV_EVENT_TOPIC            b"kvmesh.kv"
    frame 1: encode_batch(batch)       msgpack, see kvmesh.common.kv_events

Topology: every worker *binds* a PUB socket (``--kv-events-endpoint``); every
router replica *connects* one SUB socket to all of them. A PUB socket fans out
to any number of subscribers, so N router replicas see the same stream and
converge on the same index without talking to each other.

Loss and restarts. PUB/SUB drops messages when a subscriber is slow (high
water mark) or not yet connected. Each publisher numbers its batches
``seq = 0, 1, 2, ...``; the subscriber tracks the last seq per source and
reports a gap (or a restart: seq going backwards) through ``on_gap``. The
router's answer to a gap is simple and always safe: forget everything it knew
about that source and rebuild from the events that follow. A stale index can
only cost cache hits, never correctness, because the worker computes whatever
it does not find.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

import zmq
import zmq.asyncio

from kvmesh.common.errors import KvmeshError
from kvmesh.common.hashing import KEY_VERSION
from kvmesh.common.kv_events import (
    KV_EVENT_TOPIC,
    KVEvent,
    KVEventBatch,
    decode_batch,
    encode_batch,
)

log = logging.getLogger(__name__)

DEFAULT_SEND_HWM = 10_000
"""Batches a publisher queues per subscriber before it starts dropping."""

GapCallback = Callable[[str, int, int], None]
"""``on_gap(source, expected_seq, got_seq)``."""


def _bindable(endpoint: str) -> str:
    """ZeroMQ spells "any free port" as ``*``; accept the usual ``:0`` too."""
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        return endpoint[:-2] + ":*"
    return endpoint


class KVEventPublisher:
    """Worker side: a bound PUB socket. ``publish`` never blocks the caller.

    Thread-safe: one lock serialises sends (ZeroMQ sockets are not
    thread-safe) and sequence numbering, so batches leave in seq order.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        source: str,
        model_id: str,
        chunk_size: int,
        send_hwm: int = DEFAULT_SEND_HWM,
    ) -> None:
        if not source:
            raise ValueError("source must be the worker's serving URL")
        if not model_id:
            raise ValueError("model_id must be non-empty")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.source = source
        self.model_id = model_id
        self.chunk_size = chunk_size
        self.dropped = 0
        """Batches dropped because every subscriber queue was full."""
        self.published = 0
        """Batches handed to ZeroMQ."""
        self._lock = threading.Lock()
        self._seq = 0
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, send_hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(_bindable(endpoint))
        except zmq.ZMQError as exc:
            self._sock.close()
            self._ctx.term()
            raise ValueError(f"cannot bind KV event endpoint {endpoint!r}: {exc}") from exc
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        """The bound endpoint, with the real port when ``:0`` was asked for."""
        self._closed = False

    def publish(self, events: Sequence[KVEvent]) -> None:
        """Send one batch (an empty one is a heartbeat). Drops and counts on back-pressure."""
        with self._lock:
            if self._closed:
                raise ValueError("publisher is closed")
            batch = KVEventBatch(
                source=self.source, model_id=self.model_id, chunk_size=self.chunk_size,
                key_version=KEY_VERSION, seq=self._seq, events=list(events), timestamp=time.time(),
            )
            # The seq advances even when the send is dropped: that is what
            # lets subscribers see the loss.
            self._seq += 1
            try:
                self._sock.send_multipart([KV_EVENT_TOPIC, encode_batch(batch)], flags=zmq.NOBLOCK)
                self.published += 1
            except zmq.Again:
                self.dropped += 1

    @property
    def next_seq(self) -> int:
        """The seq the next batch will carry."""
        return self._seq

    def close(self) -> None:
        """Unbind and release the socket. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sock.close(linger=0)
            self._ctx.term()


class KVEventSubscriber:
    """Router side: one SUB socket connected to many publishers.

    ``run()`` is a coroutine that decodes each message and calls ``on_batch``
    on the event loop thread. Malformed or version-skewed messages go to
    ``on_error`` (logged when there is none) and never stop the loop.
    """

    def __init__(
        self,
        on_batch: Callable[[KVEventBatch], None],
        *,
        on_error: Callable[[Exception], None] | None = None,
        on_gap: GapCallback | None = None,
    ) -> None:
        self._on_batch = on_batch
        self._on_error = on_error
        self._on_gap = on_gap
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, KV_EVENT_TOPIC)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._endpoints: set[str] = set()
        self._next_seq: dict[str, int] = {}
        self._closed = False
        self.received = 0
        """Batches decoded and delivered."""

    @property
    def endpoints(self) -> frozenset[str]:
        """Publishers currently connected."""
        return frozenset(self._endpoints)

    def connect(self, endpoint: str) -> None:
        """Subscribe to a publisher; connecting twice is a no-op."""
        if endpoint in self._endpoints:
            return
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise ValueError(f"bad KV event endpoint {endpoint!r}: {exc}") from exc
        self._endpoints.add(endpoint)

    def disconnect(self, endpoint: str) -> None:
        """Stop listening to a publisher; unknown endpoints are ignored."""
        if endpoint not in self._endpoints:
            return
        self._endpoints.discard(endpoint)
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disconnect(endpoint)

    def forget_source(self, source: str) -> None:
        """Drop seq tracking for a worker (it left); its next batch starts fresh."""
        self._next_seq.pop(source, None)

    async def run(self) -> None:
        """Receive until :meth:`close` or cancellation."""
        while not self._closed:
            try:
                frames = await self._sock.recv_multipart()
            except (zmq.ZMQError, asyncio.CancelledError):
                if self._closed:
                    return
                raise
            self.handle_message(frames)

    def handle_message(self, frames: Sequence[bytes]) -> None:
        """Decode one multipart message and dispatch it (public for tests and replay)."""
        try:
            if len(frames) != 2 or frames[0] != KV_EVENT_TOPIC:
                raise KvmeshError(f"unexpected KV event framing ({len(frames)} frames)")
            batch = decode_batch(frames[1])
        except KvmeshError as exc:
            self._report(exc)
            return
        self._check_seq(batch)
        self.received += 1
        try:
            self._on_batch(batch)
        except Exception:  # noqa: BLE001 - one bad batch must not stop the stream
            log.exception("KV event consumer failed on a batch from %s", batch.source)

    def _check_seq(self, batch: KVEventBatch) -> None:
        expected = self._next_seq.get(batch.source)
        self._next_seq[batch.source] = batch.seq + 1
        if expected is not None and batch.seq != expected and self._on_gap is not None:
            self._on_gap(batch.source, expected, batch.seq)

    def _report(self, exc: Exception) -> None:
        if self._on_error is not None:
            self._on_error(exc)
        else:
            log.error("dropping bad KV event message: %s", exc)

    def close(self) -> None:
        """Close the socket; a running :meth:`run` returns. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sock.close(linger=0)
        self._ctx.term()
