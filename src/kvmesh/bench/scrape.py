"""Read a router's Prometheus metrics after a run: index size, decisions, decision time.

``bench compare`` records these per configuration, which is how the scale run
reports the router's index memory and decision time per strategy.
"""

from __future__ import annotations

import math
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

DECISION_HISTOGRAM = "kvmesh_router_decision_seconds"
"""Router histogram of routing-decision time, when the router exports one."""


def fetch_metrics_text(url: str, timeout_s: float = 5.0) -> str:
    """``GET url/metrics`` as text; ``OSError`` when unreachable."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=timeout_s) as resp:  # noqa: S310 (loopback)
        return resp.read().decode("utf-8")


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Quantile ``q`` (0..1) from cumulative ``(upper_bound, count)`` buckets, interpolating linearly
    inside the bucket as Prometheus' ``histogram_quantile`` does; None when empty."""
    if not buckets:
        return None
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            width = count - prev_count
            frac = (rank - prev_count) / width if width else 1.0
            return prev_bound + (bound - prev_bound) * frac
        prev_bound, prev_count = bound, count
    return prev_bound


def router_stats(text: str) -> dict[str, float | None]:
    """Index entries and bytes (summed over structures), decisions by reason, decision p99 (ms)."""
    out: dict[str, float | None] = {"index_entries": 0.0, "index_bytes": 0.0, "decision_p99_ms": None}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kvmesh_router_index_entries":
                out["index_entries"] = (out["index_entries"] or 0.0) + sample.value
            elif sample.name == "kvmesh_router_index_bytes":
                out["index_bytes"] = (out["index_bytes"] or 0.0) + sample.value
            elif sample.name == "kvmesh_router_routing_decisions_total":
                key = f"decisions_{sample.labels.get('decision', '?')}"
                out[key] = (out.get(key) or 0.0) + sample.value
            elif sample.name == DECISION_HISTOGRAM + "_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    p99 = histogram_quantile(list(buckets.items()), 0.99)
    out["decision_p99_ms"] = p99 * 1e3 if p99 is not None else None
    return out
