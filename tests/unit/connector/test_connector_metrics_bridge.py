"""The bridge that merges the connector's side /metrics into vLLM's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest, start_http_server

from kvmesh.common.procs import find_free_port
from kvmesh.connector.metrics_bridge import install


def test_side_metrics_appear_in_the_api_servers_registry() -> None:
    side = CollectorRegistry()
    Counter("kvmesh_connector_hit_tokens", "hits", ["tier"], registry=side).labels("l1").inc(512)
    port = find_free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=side)
    try:
        api = CollectorRegistry()
        install(port, api, timeout_s=10)  # generous: shared CI machines are slow
        assert api.get_sample_value("kvmesh_connector_hit_tokens_total", {"tier": "l1"}) == 512
        assert b"kvmesh_connector_hit_tokens_total" in generate_latest(api)
        assert api.get_sample_value("kvmesh_connector_bridge_errors_total") == 0
    finally:
        server.shutdown()
        thread.join()


def test_an_unreachable_side_port_is_counted_not_raised() -> None:
    api = CollectorRegistry()
    bridge = install(find_free_port(), api)
    text = generate_latest(api)
    assert b"kvmesh_connector_bridge_errors_total 1.0" in text
    assert bridge.errors == 1
