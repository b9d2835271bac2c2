"""``kvmesh bench router`` end to end with a small configuration."""

from __future__ import annotations

import json

import pytest

from kvmesh.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_bench_router_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "router", "--json", "--requests", "64", "--concurrency", "8", "--turns", "3",
                 "--conversations", "4", "--shared-conversations", "12"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"config", "latency_ms", "router_cpu_ms_per_request", "rps", "stream_ttft_ms", "workloads",
                        "load_avg_1m_at_start"}
    assert set(doc["workloads"]) == {"multiturn_sequential/prefixaware", "shared_prompt_concurrent/prefixaware",
                                     "multiturn_sequential/roundrobin", "shared_prompt_concurrent/roundrobin"}
    for name, q in doc["workloads"].items():
        turns = 4 * 3 if name.startswith("multiturn") else 12 * 3
        assert sum(q["turns_per_backend"].values()) == turns
        assert 0.0 <= q["stickiness"] <= 1.0
    # Prefix affinity keeps every later turn of a sequential conversation in place; roundrobin cannot.
    assert doc["workloads"]["multiturn_sequential/prefixaware"]["stickiness"] == 1.0
    assert doc["workloads"]["multiturn_sequential/roundrobin"]["stickiness"] == 0.0
    assert doc["router_cpu_ms_per_request"] > 0
    assert doc["latency_ms"]["router_p50"] > 0 and doc["rps"]["router_c8"] > 0
