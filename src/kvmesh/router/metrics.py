"""The router's Prometheus metrics (``kvmesh_router_*``), on a registry passed in.

Labelled children are cached per (endpoint, ...) so the hot path does one
dict lookup and one ``inc()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)

SizesFn = Callable[[], dict[str, tuple[int, int]]]


DECISION_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1)
"""Routing decisions take microseconds (prefixaware) to milliseconds (kvaware tokenizes)."""


class _StructureCollector(Collector):
    """Reads index and tree sizes at scrape time (no work on the request path)."""

    def __init__(self, sizes: SizesFn) -> None:
        self._sizes = sizes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        entries = GaugeMetricFamily("kvmesh_router_index_entries",
                                    "Entries in a bounded routing structure", labels=["structure"])
        size = GaugeMetricFamily("kvmesh_router_index_bytes",
                                 "Estimated bytes of a bounded routing structure", labels=["structure"])
        for name, (count, num_bytes) in sorted(self._sizes().items()):
            entries.add_metric([name], count)
            size.add_metric([name], num_bytes)
        yield entries
        yield size


class RouterMetrics:
    """Every router metric."""

    def __init__(self, registry: CollectorRegistry, strategy: str) -> None:
        self.strategy = strategy
        self.requests = Counter("kvmesh_router_requests", "Requests by endpoint, strategy and outcome",
                                ["endpoint", "strategy", "outcome"], registry=registry)
        self.decisions = Counter("kvmesh_router_routing_decisions",
                                 "Routing decisions by reason (affinity, spill, new, fallback, ...)",
                                 ["strategy", "decision"], registry=registry)
        self.decision_seconds = Histogram(
            "kvmesh_router_decision_seconds",
            "Time the strategy took to pick an endpoint (body parse, tokenization, lookup)",
            ["strategy"], buckets=DECISION_BUCKETS, registry=registry).labels(strategy)
        self.in_flight = Gauge("kvmesh_router_in_flight", "Requests in flight per endpoint",
                               ["endpoint"], registry=registry)
        self.ttft = Histogram("kvmesh_router_ttft_seconds",
                              "Time to the first response body byte, as the router sees it",
                              ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
        self.latency = Histogram("kvmesh_router_request_latency_seconds",
                                 "Whole-request latency as the router sees it", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.retries = Counter("kvmesh_router_retries", "Requests retried on another endpoint",
                               registry=registry)
        self.endpoint_healthy = Gauge("kvmesh_router_endpoint_healthy",
                                      "1 if the endpoint may receive requests", ["endpoint"],
                                      registry=registry)
        self.kv_events = Counter("kvmesh_router_kv_event_batches", "KV event batches applied",
                                 registry=registry)
        self.kv_event_mismatch = Counter(
            "kvmesh_router_kv_event_mismatch",
            "KV event batches ignored because the worker hashes differently (key version, chunk size, seed)",
            ["reason"], registry=registry)
        self.kv_event_gaps = Counter("kvmesh_router_kv_event_gaps",
                                     "Lost or restarted KV event streams (that worker's entries are dropped)",
                                     registry=registry)
        self.kv_event_errors = Counter("kvmesh_router_kv_event_errors", "Undecodable KV event messages",
                                       registry=registry)
        self._children: dict[tuple[str, ...], object] = {}

    def watch_structures(self, registry: CollectorRegistry, sizes: SizesFn) -> None:
        """Export the policy's structure sizes."""
        registry.register(_StructureCollector(sizes))

    def count_request(self, endpoint: str, outcome: str) -> None:
        key = ("r", endpoint, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(endpoint, self.strategy, outcome)
        child.inc()  # type: ignore[attr-defined]

    def count_decision(self, reason: str) -> None:
        key = ("d", reason)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.decisions.labels(self.strategy, reason)
        child.inc()  # type: ignore[attr-defined]

    def for_endpoint(self, endpoint: str) -> tuple[Gauge, Histogram, Histogram]:
        """(in-flight gauge, TTFT histogram, latency histogram) children of one endpoint."""
        key = ("e", endpoint)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (self.in_flight.labels(endpoint), self.ttft.labels(endpoint),
                                           self.latency.labels(endpoint))
        return child  # type: ignore[return-value]
