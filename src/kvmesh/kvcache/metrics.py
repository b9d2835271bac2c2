"""Prometheus metrics of the cache library (``kvmesh_cache_*``), plus plain counters.

Everything is registered on the ``CollectorRegistry`` passed in, so two
caches in one process (tests, the simulator) never collide. The same events
also bump a plain ``dict`` that :meth:`CacheMetrics.snapshot` returns, because
tests and benchmarks want exact numbers without scraping.
"""

from __future__ import annotations

import threading
from collections import Counter as _Tally
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TIERS = ("l1", "l2")

PLAIN_COUNTERS = (
    "lookups",
    "lookup_tokens",
    "l1_hit_tokens",
    "l2_hit_tokens",
    "l1_read_bytes",
    "l2_read_bytes",
    "l1_written_bytes",
    "l2_written_bytes",
    "l1_evictions",
    "l1_rejected_writes",
    "l2_corrupt_entries",
    "l2_errors",
    "l2_timeouts",
    "l2_skipped",
    "l2_dropped_writes",
    "l2_dropped_writes_queue_full",
    "l2_dropped_writes_breaker_open",
    "l2_dropped_writes_timeout",
    "l2_dropped_writes_error",
    "l2_dropped_writes_closed",
    "l2_reconnects",
    "l2_probe_failures",
    "l2_discarded",
)
"""Names :meth:`CacheMetrics.snapshot` always reports (0 until bumped)."""

# fmt: off
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
# fmt: on
_PREFIX = "kvmesh_cache_"


class CacheMetrics:
    """The metric families of one cache, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._tally: _Tally[str] = _Tally(dict.fromkeys(PLAIN_COUNTERS, 0))
        self._lock = threading.Lock()

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(_PREFIX + name, doc, labels, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(_PREFIX + name, doc, registry=registry)

        self.lookups = counter("lookups", "Prefix lookups")
        self.lookup_tokens = counter("lookup_tokens", "Tokens asked for by lookups (full chunks)")
        self.hit_tokens = counter("hit_tokens", "Leading tokens found, by tier", "tier")
        self.read_bytes = counter("read_bytes", "Payload bytes read, by tier", "tier")
        self.written_bytes = counter("written_bytes", "Payload bytes written, by tier", "tier")
        self.evictions = counter("evictions", "Entries evicted, by tier", "tier")
        self.rejected = counter("rejected_writes", "Writes a tier refused (size or pins)", "tier")
        self.corrupt = counter("corrupt_entries", "Values failing validation (misses)", "tier")
        self.l2_errors = counter("l2_errors", "L2 calls that failed, by operation", "op")
        self.l2_timeouts = counter("l2_timeouts", "L2 calls past their deadline", "op")
        self.l2_skipped = counter("l2_skipped", "L2 calls skipped: breaker open", "op")
        self.l2_dropped_writes = counter(
            "l2_dropped_writes", "Chunks not written to L2, by reason", "reason"
        )
        self.l2_breaker_state = gauge("l2_breaker_state", "L2 breaker: 0 closed, 1 open, 2 half")
        self.l2_write_queue_chunks = gauge("l2_write_queue_chunks", "Chunks queued for L2")
        self.l1_used_bytes = gauge("l1_used_bytes", "Bytes held by L1")
        self.l1_capacity_bytes = gauge("l1_capacity_bytes", "L1 byte budget")
        self.l1_entries = gauge("l1_entries", "Chunks held by L1")
        self.latency = Histogram(
            _PREFIX + "op_latency_seconds", "Latency of cache operations", ["op"],
            buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip

    def bind_l1(
        self, used: Callable[[], float], entries: Callable[[], float], capacity: int
    ) -> None:
        """Make the L1 gauges read the tier live at scrape time."""
        self.l1_used_bytes.set_function(used)
        self.l1_entries.set_function(entries)
        self.l1_capacity_bytes.set(capacity)

    def count(self, name: str, amount: float = 1) -> None:
        """Bump the plain counter ``name`` (the helpers below also bump Prometheus)."""
        with self._lock:
            self._tally[name] += amount  # type: ignore[assignment]

    def hit(self, tier: str, tokens: int) -> None:
        """Leading tokens a lookup found in ``tier``."""
        self.hit_tokens.labels(tier).inc(tokens)
        self.count(f"{tier}_hit_tokens", tokens)

    def read(self, tier: str, num_bytes: int) -> None:
        """Payload bytes handed to a reader from ``tier``."""
        self.read_bytes.labels(tier).inc(num_bytes)
        self.count(f"{tier}_read_bytes", num_bytes)

    def written(self, tier: str, num_bytes: int) -> None:
        """Payload bytes that landed in ``tier``."""
        self.written_bytes.labels(tier).inc(num_bytes)
        self.count(f"{tier}_written_bytes", num_bytes)

    def evicted(self, tier: str, entries: int) -> None:
        """Entries ``tier`` evicted to make room."""
        self.evictions.labels(tier).inc(entries)
        self.count(f"{tier}_evictions", entries)

    def rejected_write(self, tier: str) -> None:
        """One write ``tier`` refused."""
        self.rejected.labels(tier).inc()
        self.count(f"{tier}_rejected_writes")

    def corrupt_entry(self, tier: str) -> None:
        """One value from ``tier`` failed validation (served as a miss)."""
        self.corrupt.labels(tier).inc()
        self.count(f"{tier}_corrupt_entries")

    def l2_error(self, op: str) -> None:
        """One L2 call failed."""
        self.l2_errors.labels(op).inc()
        self.count("l2_errors")

    def l2_timeout(self, op: str) -> None:
        """One L2 call passed its deadline."""
        self.l2_timeouts.labels(op).inc()
        self.count("l2_timeouts")

    def l2_skip(self, op: str) -> None:
        """One L2 call not made: the breaker is open."""
        self.l2_skipped.labels(op).inc()
        self.count("l2_skipped")

    def dropped_writes(self, reason: str, chunks: int) -> None:
        """Chunks that will not reach L2, and why."""
        self.l2_dropped_writes.labels(reason).inc(chunks)
        self.count("l2_dropped_writes", chunks)
        self.count(f"l2_dropped_writes_{reason}", chunks)

    def lookup(self, asked_tokens: int) -> None:
        """One lookup over ``asked_tokens`` (full chunks only)."""
        self.lookups.inc()
        self.lookup_tokens.inc(asked_tokens)
        self.count("lookups")
        self.count("lookup_tokens", asked_tokens)

    def snapshot(self) -> dict[str, int | float]:
        """Plain counters so far (names as in the helpers, e.g. ``l2_hit_tokens``)."""
        with self._lock:
            return dict(self._tally)
