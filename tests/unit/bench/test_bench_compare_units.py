from __future__ import annotations

import pytest

from kvmesh.bench.compare import ConfigResult, ratios
from kvmesh.bench.configs import parse_config_list, parse_config_name
from kvmesh.bench.compare_report import compare_document, compare_markdown
from kvmesh.bench.fleet import GIB, FleetConfig
from kvmesh.bench.scrape import histogram_quantile, router_stats
from kvmesh.bench.stats import RequestRecord, summarize

BASE = FleetConfig(engine="sim", l1_size_bytes=2 * GIB, l2="redis", routing_strategy="kvaware")


@pytest.mark.parametrize(
    ("name", "l1", "l2", "strategy"),
    [
        ("baseline", 0, "none", "roundrobin"),
        ("l1", 2 * GIB, "none", "roundrobin"),
        ("l1+l2", 2 * GIB, "kvmesh", "roundrobin"),
        ("l1+redis+session", 2 * GIB, "redis", "session"),
        ("prefixaware", 0, "none", "prefixaware"),
        ("l1+l2+kvaware", 2 * GIB, "kvmesh", "kvaware"),
    ],
)
def test_config_names_start_from_the_baseline(name: str, l1: int, l2: str, strategy: str) -> None:
    cfg = parse_config_name(name, BASE)
    assert (cfg.l1_size_bytes, cfg.l2, cfg.routing_strategy, cfg.engine) == (l1, l2, strategy, "sim")


def test_config_list_errors() -> None:
    assert [n for n, _ in parse_config_list("baseline, l1", BASE)] == ["baseline", "l1"]
    with pytest.raises(ValueError, match="unknown config token 'l3'"):
        parse_config_list("baseline,l3", BASE)
    with pytest.raises(ValueError, match="duplicate"):
        parse_config_list("l1,l1", BASE)
    with pytest.raises(ValueError, match="no configs"):
        parse_config_list(" , ", BASE)


def _result(name: str, ttft_s: float, tokens: int) -> ConfigResult:
    rec = RequestRecord("c", 0, 0.0, ttft_s=ttft_s, chunk_times_s=[ttft_s], end_s=ttft_s,
                        input_tokens=100, output_tokens=tokens)
    return ConfigResult(name, BASE, summarize([rec], 10.0, 3.6), [rec], {"index_entries": 5.0})


def test_ratios_and_table() -> None:
    base, fast = _result("baseline", 1.0, 10), _result("l1+l2", 0.1, 20)
    got = ratios(fast.summary, base.summary)
    assert got["ttft_p50_ms"] == pytest.approx(0.1)
    assert got["output_tokens_per_s"] == pytest.approx(2.0)
    assert got["cost_per_1k_tokens"] == pytest.approx(110 / 120)
    md = compare_markdown([base, fast], "t")
    assert "| l1+l2 | 1/0 | — | 100.0 | ×0.10 (-90 %) |" in md
    doc = compare_document([base, fast], {"workload": "w"})
    assert doc["baseline"] == "baseline" and doc["configs"][1]["ratio_vs_baseline"] == got
    assert doc["configs"][1]["router"] == {"index_entries": 5.0}


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.001, 50.0), (0.002, 90.0), (0.004, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.001)
    assert histogram_quantile(buckets, 0.99) == pytest.approx(0.002 + 0.002 * 0.9)
    assert histogram_quantile([], 0.99) is None
    assert histogram_quantile([(1.0, 0.0)], 0.5) is None


def test_router_stats_sums_structures() -> None:
    text = "\n".join([
        '# TYPE kvmesh_router_index_bytes gauge',
        'kvmesh_router_index_bytes{structure="prefix_tree"} 100.0',
        'kvmesh_router_index_bytes{structure="kv_index"} 50.0',
        '# TYPE kvmesh_router_index_entries gauge',
        'kvmesh_router_index_entries{structure="prefix_tree"} 3.0',
        '# TYPE kvmesh_router_routing_decisions counter',
        'kvmesh_router_routing_decisions_total{decision="affinity",strategy="kvaware"} 7.0',
    ]) + "\n"
    assert router_stats(text) == {"index_entries": 3.0, "index_bytes": 150.0, "decision_p99_ms": None,
                                  "decisions_affinity": 7.0}
