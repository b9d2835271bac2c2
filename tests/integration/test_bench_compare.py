"""``kvmesh bench compare --engine sim``: fleets in turn, table, JSON and plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_compare_writes_table_json_and_plots(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kvmesh", "bench", "compare", "--engine", "sim", "--workers", "2",
         "--configs", "baseline,l1+l2+prefixaware", "--workload", "multiround", "--length-scale", "0.05",
         "--max-output-tokens", "4", "--num-requests", "12", "--concurrency", "3", "--seed", "1",
         "--output", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc == json.loads((tmp_path / "compare.json").read_text())
    assert (doc["workload"], doc["engine"], doc["baseline"]) == ("multiround", "sim", "baseline")
    base, kv = doc["configs"]
    assert (base["name"], base["l1_size_bytes"], base["l2"], base["routing_strategy"]) == (
        "baseline", 0, "none", "roundrobin")
    assert (kv["name"], kv["l2"], kv["routing_strategy"]) == ("l1+l2+prefixaware", "kvmesh", "prefixaware")
    assert kv["l1_size_bytes"] > 0
    for cfg in doc["configs"]:
        assert (cfg["requests_ok"], cfg["requests_failed"]) == (12, 0)
        assert cfg["output_tokens"] == 12 * 4
    assert base["ratio_vs_baseline"] == {"ttft_p50_ms": 1.0, "ttft_p90_ms": 1.0, "output_tokens_per_s": 1.0,
                                         "cost_per_1k_tokens": 1.0}
    for key, ratio in kv["ratio_vs_baseline"].items():
        assert ratio == pytest.approx(kv[key] / base[key])
    assert kv["router"]["index_entries"] > 0  # the prefix tree learned the prompts
    md = (tmp_path / "compare.md").read_text()
    assert md.count("| baseline |") == 2 and md.count("| l1+l2+prefixaware |") == 2
    for name in ("ttft_cdf.png", "ttft_bars.png", "throughput.png", "cost.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    assert len((tmp_path / "requests_baseline.jsonl").read_text().splitlines()) == 12


def test_compare_rejects_an_unknown_config_token() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kvmesh", "bench", "compare", "--engine", "sim", "--configs", "baseline,l3",
         "--workload", "multiround"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "'l3'" in lines[0]
