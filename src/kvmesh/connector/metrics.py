"""Prometheus metrics of the vLLM connector (``kvmesh_connector_*``).

Registered on the ``CollectorRegistry`` passed in. In a ``kvmesh worker`` the
connector lives in vLLM's EngineCore subprocess, so that registry (with the
cache library's ``kvmesh_cache_*`` families on it too) is served on a
loopback side port, and the API server process merges it into its own
``/metrics`` (see :mod:`kvmesh.connector.metrics_bridge`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ConnectorMetrics:
    """The connector's metric families on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "kvmesh_connector_"
        self.lookup_tokens = Counter(
            p + "lookup_tokens",
            "Prompt tokens beyond vLLM's prefix cache that were looked up",
            registry=registry,
        )
        self.hit_tokens = Counter(
            p + "hit_tokens",
            "Tokens vLLM accepted to load, by tier they came from",
            ["tier"],
            registry=registry,
        )
        self.loaded_tokens = Counter(
            p + "loaded_tokens", "Tokens written into vLLM's KV blocks", registry=registry
        )
        self.loaded_bytes = Counter(
            p + "loaded_bytes", "KV bytes loaded into vLLM's blocks", registry=registry
        )
        self.saved_bytes = Counter(
            p + "saved_bytes", "KV bytes handed to the cache", registry=registry
        )
        self.saved_chunks = Counter(
            p + "saved_chunks", "Chunks handed to the cache", registry=registry
        )
        self.dropped_saves = Counter(
            p + "dropped_saves",
            "Chunks the cache did not keep in L1 (full of pinned entries, or an error)",
            registry=registry,
        )
        self.errors = Counter(
            p + "errors",
            "Failures that fell back to recompute, by operation",
            ["op"],
            registry=registry,
        )
        self.load_failed_tokens = Counter(
            p + "load_failed_tokens",
            "Promised tokens a load could not supply (vLLM recomputes them)",
            registry=registry,
        )
        self.lookup_seconds = Histogram(
            p + "lookup_seconds",
            "Scheduler-side lookup latency",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.load_seconds = Histogram(
            p + "load_seconds",
            "Latency of loading one request's chunks",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.save_seconds = Histogram(
            p + "save_seconds",
            "Latency of saving one step's chunks (gather + L1 copy)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        for tier in ("l1", "l2"):
            self.hit_tokens.labels(tier)
        for op in ("lookup", "load", "save", "events"):
            self.errors.labels(op)
