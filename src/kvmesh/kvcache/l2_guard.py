"""``GuardedL2``: an L2 backend behind deadlines, a circuit breaker and a bounded write queue.

The cache's callers are synchronous engine threads; L2 backends are asyncio.
One background thread runs one event loop that owns the backend::

    engine thread                          "kvmesh-l2" thread (asyncio loop)
    -------------                          ---------------------------------
    exists_prefix/get_many --submit------> backend call under asyncio.timeout(deadline)
       waits <= deadline + grace <-result-
    submit_writes --(bounded, never waits)-> queue -> writer task -> put_many (pipelined)
                                           probe task (only while the breaker is open)

Rules that keep the cache from ever being slower than recompute:
- every call has a deadline; past it the caller gets ``None`` (a miss) and the
  timeout is counted and fed to the breaker;
- any exception (transport, protocol, a backend bug) is also a counted miss;
  nothing raises to the caller;
- when the breaker is open, calls return ``None`` at once and writes are
  dropped (counted); a probe pings the backend every ``l2_breaker_reset_s``
  and closes the breaker when it answers (the client reconnects on its own);
- the write queue holds at most ``l2_write_queue_chunks``; past that,
  writes are dropped and counted, the caller never waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from kvmesh.common.errors import BackendTimeoutError, KvmeshError
from kvmesh.kvcache.circuit_breaker import BreakerState, CircuitBreaker
from kvmesh.kvcache.config import CacheConfig
from kvmesh.kvcache.l2.base import Buffer, L2Backend
from kvmesh.kvcache.metrics import CacheMetrics
from kvmesh.kvcache.serde import Frame

log = logging.getLogger(__name__)
T = TypeVar("T")

_GRACE_S = 0.01
"""Extra time the calling thread waits beyond the loop-side deadline (thread hand-off)."""
_CLOSE_TIMEOUT_S = 2.0
"""Longest ``close()`` waits for the writer to finish in-flight work."""


@dataclass(frozen=True)
class WriteItem:
    """One chunk on its way to L2."""

    key: bytes
    """Storage key."""
    frame: Frame
    """The framed chunk (sealed by the writer, off the engine's thread)."""
    tag: object = None
    """Passed back to ``on_written`` (the cache uses the chain hash)."""


def _release(items: Sequence[WriteItem]) -> None:
    """The writer is done with these frames: L1 may recycle their buffers again.

    Each frame is leased once, when L1 inserted it, and released once, here;
    the two never overlap, so no lock is needed.
    """
    for item in items:
        if item.frame.leases > 0:
            item.frame.leases -= 1


class GuardedL2:
    """Synchronous, never-raising, deadline-bounded access to one L2 backend."""

    def __init__(
        self,
        backend: L2Backend,
        config: CacheConfig,
        metrics: CacheMetrics,
        *,
        on_written: Callable[[list[WriteItem]], None] | None = None,
        owns_backend: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self._owns_backend = owns_backend
        self._config = config
        self._metrics = metrics
        self._on_written = on_written
        self.breaker = CircuitBreaker(
            config.l2_breaker_failure_threshold,
            config.l2_breaker_reset_s,
            clock=clock,
            on_change=self._breaker_changed,
        )
        self._closed = False
        self._pending = 0
        self._cond = threading.Condition()
        self._probe: concurrent.futures.Future[None] | None = None
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[list[WriteItem] | None] = asyncio.Queue()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kvmesh-l2", daemon=True
        )
        self._thread.start()
        self._writer = asyncio.run_coroutine_threadsafe(self._write_loop(), self._loop)

    @property
    def available(self) -> bool:
        """True while the breaker is closed (the backend answered recently)."""
        return not self._closed and self.breaker.state is BreakerState.CLOSED

    @property
    def pending_writes(self) -> int:
        """Chunks queued or being written."""
        return self._pending

    # ---- reads -----------------------------------------------------------------

    def exists_prefix(self, keys: Sequence[bytes]) -> int | None:
        """Leading keys present in L2, or ``None`` on any failure or deadline."""
        return self._call(
            "exists", lambda: self.backend.exists_prefix(keys), self._config.l2_deadline_s
        )

    def get_many(self, keys: Sequence[bytes], expected_bytes: int) -> list[Buffer | None] | None:
        """Values of ``keys`` (``None`` slots for misses), or ``None`` on failure or deadline."""
        deadline = self._config.data_deadline_s(expected_bytes)
        return self._call("get", lambda: self.backend.get_many(keys), deadline)

    def discard(self, keys: Sequence[bytes]) -> None:
        """Best-effort background delete of corrupt values; never waits, never raises."""
        if self._closed or not keys or self.breaker.state is not BreakerState.CLOSED:
            return

        async def run() -> None:
            try:
                await self._bounded(
                    lambda: self.backend.delete_many(keys), self._config.l2_deadline_s
                )
                self._metrics.count("l2_discarded", len(keys))
            except NotImplementedError:
                pass  # this backend cannot delete: the entry stays a (counted) miss
            except Exception as exc:  # noqa: BLE001
                log.debug("L2 discard failed: %r", exc)

        with contextlib.suppress(RuntimeError):  # the loop closed under us: nothing to clean
            asyncio.run_coroutine_threadsafe(run(), self._loop)

    def _call(self, op: str, make: Callable[[], Awaitable[T]], deadline_s: float) -> T | None:
        if self._closed:
            return None
        if not self.breaker.allow():
            self._metrics.l2_skip(op)
            return None
        started = time.perf_counter()
        try:
            future = asyncio.run_coroutine_threadsafe(self._bounded(make, deadline_s), self._loop)
        except RuntimeError:  # the loop closed under us: close() raced this call
            return None
        try:
            result = future.result(timeout=deadline_s + _GRACE_S)
        except (TimeoutError, BackendTimeoutError):
            future.cancel()
            self._failed(op, timed_out=True)
            return None
        except concurrent.futures.CancelledError:  # a BaseException: close() raced this call
            return None
        except Exception as exc:  # noqa: BLE001 - the caller must never see an L2 exception
            self._failed(op, timed_out=False, exc=exc)
            return None
        self.breaker.record_success()
        self._metrics.latency.labels(f"l2_{op}").observe(time.perf_counter() - started)
        return result

    @staticmethod
    async def _bounded(make: Callable[[], Awaitable[T]], deadline_s: float) -> T:
        try:
            async with asyncio.timeout(deadline_s):
                return await make()
        except TimeoutError as exc:
            raise BackendTimeoutError(
                f"L2 call exceeded its {deadline_s * 1000:.0f} ms deadline"
            ) from exc

    def _failed(self, op: str, *, timed_out: bool, exc: BaseException | None = None) -> None:
        if timed_out:
            self._metrics.l2_timeout(op)
        else:
            self._metrics.l2_error(op)
            if exc is not None and not isinstance(exc, KvmeshError):
                log.error("L2 backend %s raised an unexpected %r", self.backend.url, exc)
        self.breaker.record_failure()

    # ---- breaker and reconnect probe -------------------------------------------

    def _breaker_changed(self, state: BreakerState) -> None:
        self._metrics.l2_breaker_state.set(int(state))
        if state is BreakerState.OPEN:
            if self._closed:
                return
            log.warning(
                "L2 %s unavailable: circuit breaker open, serving L1 only", self.backend.url
            )
            self._start_probe()
        elif state is BreakerState.CLOSED:
            log.info("L2 %s reachable again: circuit breaker closed", self.backend.url)

    def _start_probe(self) -> None:
        # Called under the breaker's lock; scheduling is non-blocking.
        if self._probe is None or self._probe.done():
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                self._probe = asyncio.run_coroutine_threadsafe(self._probe_loop(), self._loop)

    async def _probe_loop(self) -> None:
        """Ping the backend every reset interval until it answers, then close the breaker."""
        # A reconnect may need a TCP and TLS handshake: allow more than a plain call.
        probe_deadline_s = max(self._config.l2_deadline_s, 0.5)
        while not self._closed and self.breaker.state is not BreakerState.CLOSED:
            await asyncio.sleep(self.breaker.reset_interval_s)  # pacing, not a readiness wait
            if not self.breaker.allow():
                continue
            try:
                async with asyncio.timeout(probe_deadline_s):
                    await self.backend.ping()
            except Exception:  # noqa: BLE001 - any failure keeps the breaker open
                self._metrics.count("l2_probe_failures")
                self.breaker.record_failure()
            else:
                self._metrics.count("l2_reconnects")
                self.breaker.record_success()

    # ---- writes ----------------------------------------------------------------

    def submit_writes(self, items: Sequence[WriteItem]) -> int:
        """Queue ``items`` for L2 without waiting; returns how many were queued.

        The rest are dropped and counted (queue full, breaker open, closed).
        """
        if not items:
            return 0
        if self.breaker.state is not BreakerState.CLOSED:
            self._metrics.dropped_writes("breaker_open", len(items))
            _release(items)
            return 0
        with self._cond:  # close() flips _closed under this lock: no enqueue can race it
            if self._closed:
                taken: list[WriteItem] = []
            else:
                room = max(self._config.l2_write_queue_chunks - self._pending, 0)
                taken = list(items[:room])
            if taken:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, taken)
                self._pending += len(taken)
                self._metrics.l2_write_queue_chunks.set(self._pending)
        if len(taken) < len(items):
            self._metrics.dropped_writes(
                "closed" if self._closed else "queue_full", len(items) - len(taken)
            )
            _release(items[len(taken) :])
        return len(taken)

    def flush(self, timeout_s: float) -> bool:
        """Wait until the write queue is empty; False if ``timeout_s`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout=timeout_s)

    async def _write_loop(self) -> None:
        batch_max = self._config.l2_write_batch_chunks
        backlog: list[WriteItem] = []
        while True:
            if not backlog:
                got = await self._queue.get()
                if got is None:
                    return
                backlog.extend(got)
            while len(backlog) < batch_max and not self._queue.empty():
                got = self._queue.get_nowait()
                if got is None:
                    self._queue.put_nowait(None)  # finish the backlog first, then stop
                    break
                backlog.extend(got)
            batch, backlog = backlog[:batch_max], backlog[batch_max:]
            try:
                await self._write_batch(batch)
            finally:
                _release(batch)
                self._done(len(batch))

    def _done(self, count: int) -> None:
        with self._cond:
            self._pending -= count
            self._metrics.l2_write_queue_chunks.set(self._pending)
            self._cond.notify_all()

    async def _write_batch(self, batch: list[WriteItem]) -> None:
        if self._closed or not self.breaker.allow():
            self._metrics.dropped_writes("closed" if self._closed else "breaker_open", len(batch))
            return
        # Checksumming megabytes would stall the loop (and the lookups queued on it).
        wire = await asyncio.to_thread(lambda: [(item.key, item.frame.seal()) for item in batch])
        payload = sum(item.frame.chunk.nbytes for item in batch)
        deadline_s = self._config.data_deadline_s(sum(v.nbytes for _, v in wire))
        started = time.perf_counter()
        try:
            await self._bounded(lambda: self.backend.put_many(wire), deadline_s)
        except BackendTimeoutError:
            self._failed("put", timed_out=True)
            self._metrics.dropped_writes("timeout", len(batch))
            return
        except Exception as exc:  # noqa: BLE001
            self._failed("put", timed_out=False, exc=exc)
            self._metrics.dropped_writes("error", len(batch))
            return
        self.breaker.record_success()
        self._metrics.latency.labels("l2_put").observe(time.perf_counter() - started)
        self._metrics.written("l2", payload)
        if self._on_written is not None:
            try:
                self._on_written(batch)
            except Exception:  # an event sink bug must not kill the writer
                log.exception("on_written callback failed")

    # ---- shutdown --------------------------------------------------------------

    def close(self) -> None:
        """Stop the writer (queued writes are dropped and counted), the probe and the loop.

        Closes the backend too when this object owns it. Idempotent.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(
                _CLOSE_TIMEOUT_S * 2
            )
        except Exception:  # shutting down regardless
            log.warning("L2 shutdown did not finish cleanly", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()
        self._drop_leftovers()

    def _drop_leftovers(self) -> None:
        """Count writes still queued (a store racing close) as dropped, so flush() cannot hang."""
        with self._cond:
            leftover = self._pending
        if leftover:
            self._metrics.dropped_writes("closed", leftover)
            self._done(leftover)

    async def _shutdown(self) -> None:
        self._queue.put_nowait(None)
        writer = asyncio.wrap_future(self._writer)
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await writer
        except TimeoutError:
            self._writer.cancel()
        # Calls still in flight (callers waiting on them) and the probe: cancel now,
        # so waiting callers get their miss at once instead of at their deadline.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        self._drop_leftovers()
        if not self._owns_backend:
            return await self._loop.shutdown_default_executor()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await self.backend.close()
        except Exception:  # a broken backend must not block shutdown
            log.warning("L2 backend close failed", exc_info=True)
        await self._loop.shutdown_default_executor()
