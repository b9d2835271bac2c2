"""Prometheus metrics of a simulated worker, on a registry passed in.

Names: ``kvmesh_sim_*`` for simulator-specific series, plus the two vLLM
gauges that load-aware routers read (``vllm:num_requests_running`` and
``vllm:num_requests_waiting``) and ``vllm:kv_cache_usage_perc``, so a router
cannot tell a sim worker from a real one. ``kvmesh_cache_*`` series come from
the cache library itself when offload is on.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class SimMetrics:
    """Every series one simulated worker exports."""

    def __init__(self, registry: CollectorRegistry, model_id: str) -> None:
        self.registry = registry
        self.requests = Counter(
            "kvmesh_sim_requests", "Requests finished, by outcome.", ["status"], registry=registry
        )
        self.prompt_tokens = Counter(
            "kvmesh_sim_prompt_tokens", "Prompt tokens received.", registry=registry
        )
        self.cached_tokens = Counter(
            "kvmesh_sim_cached_tokens",
            "Prompt tokens whose KV was reused instead of computed, by the tier it came from.",
            ["tier"], registry=registry,
        )
        for tier in ("engine", "l1", "l2"):  # export zeros from the start, for dashboards
            self.cached_tokens.labels(tier=tier)
        self.generation_tokens = Counter(
            "kvmesh_sim_generation_tokens", "Output tokens generated.", registry=registry
        )
        self.ttft_seconds = Histogram(
            "kvmesh_sim_ttft_seconds", "Time from arrival to first token, inside the engine.",
            buckets=_TTFT_BUCKETS, registry=registry,
        )
        labels = {"model_name": model_id}
        self.num_running = Gauge(
            "vllm:num_requests_running", "Requests in the running batch (vLLM-compatible).",
            list(labels), registry=registry,
        ).labels(**labels)
        self.num_waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting to be scheduled (vLLM-compatible).",
            list(labels), registry=registry,
        ).labels(**labels)
        self.cache_usage = Gauge(
            "vllm:kv_cache_usage_perc", "Fraction of the engine KV pool in use (vLLM-compatible).",
            list(labels), registry=registry,
        ).labels(**labels)
