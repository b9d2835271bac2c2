"""Merge the connector's side /metrics into the vLLM API server's /metrics.

vLLM V1 runs the connector inside its EngineCore subprocess, out of reach of
the API server's Prometheus registry. The connector serves its own registry
on a loopback side port (``metrics_port``); :class:`SideMetricsCollector`,
registered in the API server process, scrapes that port on every scrape of
``/metrics`` and re-exposes the families, so one scrape sees both vLLM's and
kvmesh's metrics. A failed side scrape yields nothing (and bumps
``kvmesh_connector_bridge_errors``) rather than failing vLLM's endpoint.

The side scrape's timeout (2 s) is generous on purpose: the side port is served
by a thread of the EngineCore process, which on a busy CPU worker competes for
the GIL with a long prefill, and a timeout makes every kvmesh family vanish from
that scrape. It stays well below Prometheus's default 10 s scrape timeout.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector


class SideMetricsCollector(Collector):
    """Re-exposes the metric families served at ``http://127.0.0.1:<port>/metrics``."""

    def __init__(self, port: int, timeout_s: float = 2.0) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be in [1, 65535], got {port}")
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.timeout_s = timeout_s
        self.errors = 0

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:  # noqa: S310 (loopback)
                text = resp.read().decode("utf-8")
        except OSError:
            self.errors += 1
            text = ""
        yield from text_string_to_metric_families(text)
        errors = CounterMetricFamily(
            "kvmesh_connector_bridge_errors", "Failed scrapes of the connector's side metrics port"
        )
        errors.add_metric([], self.errors)
        yield errors

    def describe(self) -> list[Metric]:
        # Families are only known after a scrape; describing none keeps registration lazy.
        return []


def install(port: int, registry: CollectorRegistry, timeout_s: float = 2.0) -> SideMetricsCollector:
    """Register a bridge to ``port`` on ``registry`` (vLLM's, in the API server process)."""
    collector = SideMetricsCollector(port, timeout_s)
    registry.register(collector)
    return collector
