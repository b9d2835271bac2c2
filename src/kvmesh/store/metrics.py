"""Prometheus metrics of a store server (``kvmesh_store_*``).

Tier sizes and event counts are read from the store when Prometheus scrapes
(a custom collector), so the hot path only bumps plain integers. Per-operation
counts and latency are observed by the server per request.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kvmesh.store.engine import TieredStore

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)


class _TierCollector(Collector):
    """Entries, bytes, hits, evictions per tier, read from the store at scrape time."""

    def __init__(self, store: TieredStore) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._store.stats()
        tiers = stats["tiers"]
        entries = GaugeMetricFamily("kvmesh_store_entries", "Entries per tier", labels=["tier"])
        size = GaugeMetricFamily("kvmesh_store_bytes", "Value bytes per tier", labels=["tier"])
        cap = GaugeMetricFamily(
            "kvmesh_store_capacity_bytes", "Byte budget per tier", labels=["tier"]
        )
        evictions = CounterMetricFamily(
            "kvmesh_store_evictions", "Entries evicted per tier", labels=["tier"]
        )
        for tier, values in tiers.items():
            entries.add_metric([tier], values["entries"])
            size.add_metric([tier], values["bytes"])
            cap.add_metric([tier], values["capacity_bytes"])
            evictions.add_metric([tier], values["evictions"])
        hits = CounterMetricFamily("kvmesh_store_hits", "Key lookups found, per tier",
                                   labels=["tier"])
        for tier, count in stats["hits"].items():
            hits.add_metric([tier], count)
        yield from (entries, size, cap, evictions, hits)
        for name, doc, value in (
            ("misses", "Key lookups not found in any tier", stats["misses"]),
            ("demotions", "Entries written to disk when evicted from memory", stats["demotions"]),
            ("promotions", "Disk hits copied back into memory", stats["promotions"]),
            ("rejected_puts", "Values refused for lack of space", stats["rejected_puts"]),
            ("leases_expired", "Leases that ended by timeout", stats["leases_expired"]),
        ):
            yield CounterMetricFamily(f"kvmesh_store_{name}", doc, value=value)
        yield GaugeMetricFamily("kvmesh_store_leases_active", "Live shared-memory leases",
                                value=stats["leases_active"])


class StoreMetrics:
    """All store metrics, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, store: TieredStore) -> None:
        registry.register(_TierCollector(store))
        self.ops = Counter("kvmesh_store_operations", "Requests handled, per opcode",
                           ["op"], registry=registry)
        self.keys = Counter("kvmesh_store_keys", "Keys carried by requests, per opcode",
                            ["op"], registry=registry)
        self.errors = Counter("kvmesh_store_errors", "Error replies, per status",
                              ["status"], registry=registry)
        self.latency = Histogram(
            "kvmesh_store_request_seconds", "Request handling time, per opcode",
            ["op"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.connections = Gauge("kvmesh_store_connections", "Open client connections",
                                 registry=registry)
