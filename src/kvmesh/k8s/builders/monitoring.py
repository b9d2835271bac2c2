"""A Prometheus-operator PodMonitor or ServiceMonitor when ``metrics.enabled``.

One monitor per endpoint selects all of its pods (or Services) by the
instance label and scrapes every named metrics port: the worker's serving
port, the router's ``http`` and the store's ``metrics``. A port a pod lacks
is simply not scraped on that pod.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvmesh.k8s.builders.common import Manifest, RenderOptions, metadata, selector_labels
from kvmesh.k8s.builders.worker import uses_tiered_storage
from kvmesh.k8s.spec import Endpoint

MONITOR_COMPONENT = "metrics"


def scrape_ports(endpoint: Endpoint) -> list[str]:
    """Named ports to scrape, in a stable order without duplicates."""
    ports = [endpoint.spec.worker.model_invocation_port.name]
    if endpoint.spec.intelligent_routing_spec.enabled:
        ports.append("http")
    if uses_tiered_storage(endpoint):
        ports.append("metrics")
    return list(dict.fromkeys(ports))


def _endpoints(endpoint: Endpoint) -> list[dict[str, Any]]:
    metrics = endpoint.spec.metrics
    return [{"port": port, "path": metrics.model_metrics.path if i == 0 else "/metrics",
             "interval": metrics.scrape_interval}
            for i, port in enumerate(scrape_ports(endpoint))]


def _pod_monitor_spec(endpoint: Endpoint) -> dict[str, Any]:
    return {"selector": {"matchLabels": selector_labels(endpoint)},
            "podMetricsEndpoints": _endpoints(endpoint)}


def _service_monitor_spec(endpoint: Endpoint) -> dict[str, Any]:
    return {"selector": {"matchLabels": selector_labels(endpoint)},
            "endpoints": _endpoints(endpoint)}


MONITOR_SPECS: dict[str, Callable[[Endpoint], dict[str, Any]]] = {
    "PodMonitor": _pod_monitor_spec,
    "ServiceMonitor": _service_monitor_spec,
}
"""``metrics.monitorKind`` -> spec builder."""


def build_monitor(endpoint: Endpoint, options: RenderOptions) -> list[Manifest]:
    """The monitor, or none when metrics are disabled."""
    metrics = endpoint.spec.metrics
    if not metrics.enabled:
        return []
    return [{
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": metrics.monitor_kind,
        "metadata": metadata(endpoint, endpoint.name, MONITOR_COMPONENT),
        "spec": MONITOR_SPECS[metrics.monitor_kind](endpoint),
    }]
