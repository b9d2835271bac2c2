"""Grafana dashboards for a kvmesh fleet, generated from panel tables.

``deploy/dashboards/{cache,routing,latency}.json`` are the output of
``kvmesh operator dashboards -o deploy/dashboards``; a unit test checks the
files are current *and* that every metric a query names is one a kvmesh
component really defines, so a renamed metric breaks the build instead of a
panel going silently empty.

Every query is scoped to the ``$namespace`` variable (the label Prometheus
operator's PodMonitor/ServiceMonitor attach). Worker-side series
(``kvmesh_cache_*``, ``kvmesh_connector_*``) are served on the worker's
``/metrics``; ``kvmesh_store_*`` on the store's metrics port;
``kvmesh_router_*`` on the router's ``/metrics``; ``kvmesh_sim_*`` only by
simulated fleets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

NS = 'namespace=~"$namespace"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    """One time-series panel."""

    title: str
    """Panel title."""
    unit: str
    """Grafana unit id (``percentunit``, ``bytes``, ``s``, ``ops``, ``short``)."""
    targets: list[tuple[str, str]]
    """(PromQL expression, legend) pairs."""
    description: str = ""
    """Tooltip text."""


@dataclass(frozen=True)
class Dashboard:
    """One dashboard file."""

    uid: str
    """Stable Grafana uid (links survive re-imports)."""
    title: str
    """Dashboard title."""
    panels: list[Panel] = field(default_factory=list)
    """Panels, laid out two per row."""


def _quantile(q: float, metric: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{NS}}}[{RATE}])))"


def _rate(metric: str, by: str = "", selector: str = NS) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RATE}]))" if by else (
        f"sum(rate({metric}{{{selector}}}[{RATE}]))")


CACHE = Dashboard("kvmesh-cache", "kvmesh / KV cache", [
    Panel("Cache hit rate per tier (cache library)", "percentunit", [
        (f"{_rate('kvmesh_cache_hit_tokens_total', 'tier')} / ignoring(tier) group_left "
         f"{_rate('kvmesh_cache_lookup_tokens_total')}", "{{tier}}")],
        "Leading prompt tokens found in each tier / tokens looked up."),
    Panel("Tokens loaded into vLLM per tier (connector)", "percentunit", [
        (f"{_rate('kvmesh_connector_hit_tokens_total', 'tier')} / ignoring(tier) group_left "
         f"{_rate('kvmesh_connector_lookup_tokens_total')}", "{{tier}}")],
        "Tokens vLLM accepted from kvmesh, beyond its own prefix cache."),
    Panel("L1 bytes", "bytes", [
        (f"sum(kvmesh_cache_l1_used_bytes{{{NS}}})", "used"),
        (f"sum(kvmesh_cache_l1_capacity_bytes{{{NS}}})", "capacity")]),
    Panel("L2 store bytes per tier (tieredstorage)", "bytes", [
        (f"sum by (tier) (kvmesh_store_bytes{{{NS}}})", "used {{tier}}"),
        (f"sum by (tier) (kvmesh_store_capacity_bytes{{{NS}}})", "capacity {{tier}}")]),
    Panel("Bytes read / written per tier", "Bps", [
        (_rate("kvmesh_cache_read_bytes_total", "tier"), "read {{tier}}"),
        (_rate("kvmesh_cache_written_bytes_total", "tier"), "written {{tier}}")]),
    Panel("Evictions", "ops", [
        (_rate("kvmesh_cache_evictions_total", "tier"), "cache {{tier}}"),
        (_rate("kvmesh_store_evictions_total", "tier"), "store {{tier}}")]),
    Panel("L2 errors, timeouts and dropped writes", "ops", [
        (_rate("kvmesh_cache_l2_errors_total", "op"), "error {{op}}"),
        (_rate("kvmesh_cache_l2_timeouts_total", "op"), "timeout {{op}}"),
        (_rate("kvmesh_cache_l2_dropped_writes_total", "reason"), "dropped {{reason}}"),
        (_rate("kvmesh_store_errors_total", "status"), "store {{status}}")],
        "Every one of these fell back to recompute; none changes an answer."),
    Panel("L2 circuit breaker (0 closed, 1 open, 2 half-open)", "short", [
        (f"max(kvmesh_cache_l2_breaker_state{{{NS}}})", "breaker")]),
    Panel("Store hits and misses", "ops", [
        (_rate("kvmesh_store_hits_total", "tier"), "hit {{tier}}"),
        (_rate("kvmesh_store_misses_total"), "miss")]),
    Panel("Connector errors (fell back to recompute)", "ops", [
        (_rate("kvmesh_connector_errors_total", "op"), "{{op}}")]),
])

ROUTING = Dashboard("kvmesh-routing", "kvmesh / Routing", [
    Panel("Routing decisions", "ops", [
        (_rate("kvmesh_router_routing_decisions_total", "strategy, decision"),
         "{{strategy}} {{decision}}")]),
    Panel("Routing decision time", "s", [
        (_quantile(0.5, "kvmesh_router_decision_seconds", "strategy"), "P50 {{strategy}}"),
        (_quantile(0.99, "kvmesh_router_decision_seconds", "strategy"), "P99 {{strategy}}")],
        "Time the strategy takes to pick an endpoint; kvaware includes tokenization."),
    Panel("In-flight requests per endpoint", "short", [
        (f"sum by (endpoint) (kvmesh_router_in_flight{{{NS}}})", "{{endpoint}}")],
        "Live load the router balances against cache affinity."),
    Panel("Requests per endpoint", "reqps", [
        (_rate("kvmesh_router_requests_total", "endpoint"), "{{endpoint}}")]),
    Panel("Request outcomes", "reqps", [
        (_rate("kvmesh_router_requests_total", "outcome"), "{{outcome}}"),
        (_rate("kvmesh_router_retries_total"), "retried")]),
    Panel("Healthy endpoints", "short", [
        (f"sum(kvmesh_router_endpoint_healthy{{{NS}}})", "healthy"),
        (f"count(kvmesh_router_endpoint_healthy{{{NS}}})", "known")]),
    Panel("KV events (kvaware)", "ops", [
        (_rate("kvmesh_router_kv_event_batches_total"), "applied"),
        (_rate("kvmesh_router_kv_event_mismatch_total"), "hash mismatch"),
        (_rate("kvmesh_router_kv_event_gaps_total"), "gaps"),
        (_rate("kvmesh_router_kv_event_errors_total"), "undecodable")],
        "Any 'hash mismatch' means router and workers disagree on chunk size or seed."),
    Panel("Routing index size", "bytes", [
        (f"sum by (structure) (kvmesh_router_index_bytes{{{NS}}})", "{{structure}}")]),
    Panel("Routing index entries", "short", [
        (f"sum by (structure) (kvmesh_router_index_entries{{{NS}}})", "{{structure}}")]),
])

LATENCY = Dashboard("kvmesh-latency", "kvmesh / Latency and throughput", [
    Panel("TTFT P50 / P90 (router)", "s", [
        (_quantile(0.5, "kvmesh_router_ttft_seconds"), "P50"),
        (_quantile(0.9, "kvmesh_router_ttft_seconds"), "P90")],
        "Time to the first response byte, as clients see it through the router."),
    Panel("TTFT P90 per endpoint", "s", [
        (_quantile(0.9, "kvmesh_router_ttft_seconds", "endpoint"), "{{endpoint}}")]),
    Panel("Throughput", "reqps", [
        (_rate("kvmesh_router_requests_total", selector=f'{NS}, outcome="ok"'), "ok requests/s")]),
    Panel("Request latency P50 / P90", "s", [
        (_quantile(0.5, "kvmesh_router_request_latency_seconds"), "P50"),
        (_quantile(0.9, "kvmesh_router_request_latency_seconds"), "P90")]),
    Panel("KV load / lookup latency P90 (connector)", "s", [
        (_quantile(0.9, "kvmesh_connector_load_seconds"), "load"),
        (_quantile(0.9, "kvmesh_connector_lookup_seconds"), "lookup"),
        (_quantile(0.9, "kvmesh_connector_save_seconds"), "save")]),
    Panel("Cache and store operation latency P90", "s", [
        (_quantile(0.9, "kvmesh_cache_op_latency_seconds", "op"), "cache {{op}}"),
        (_quantile(0.9, "kvmesh_store_request_seconds", "op"), "store {{op}}")]),
    Panel("Simulated fleet: engine TTFT P50 / P90 and tokens/s", "s", [
        (_quantile(0.5, "kvmesh_sim_ttft_seconds"), "P50"),
        (_quantile(0.9, "kvmesh_sim_ttft_seconds"), "P90")],
        "Only `kvmesh sim-worker` fleets export these."),
    Panel("Simulated fleet: generated tokens/s", "short", [
        (_rate("kvmesh_sim_generation_tokens_total"), "tokens/s")]),
])

DASHBOARDS: dict[str, Dashboard] = {"cache": CACHE, "routing": ROUTING, "latency": LATENCY}
"""File stem -> dashboard."""


def _panel_json(panel: Panel, index: int) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    """The Grafana JSON model of ``dashboard``."""
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "tags": ["kvmesh"],
        "schemaVersion": 39,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Data source"},
            {"name": "namespace", "type": "query", "label": "Namespace", "multi": True,
             "includeAll": True, "refresh": 2,
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": "label_values(kvmesh_cache_lookups_total, namespace)"},
        ]},
        "panels": [_panel_json(panel, i) for i, panel in enumerate(dashboard.panels)],
    }


def dashboard_text(dashboard: Dashboard) -> str:
    """The exact file content (stable key order, trailing newline)."""
    return json.dumps(dashboard_json(dashboard), indent=2) + "\n"
