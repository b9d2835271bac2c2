"""Sim workers + the real router + the real store, driven by ``kvmesh bench serve``."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvmesh.bench.configs import parse_config_name
from kvmesh.bench.fleet import Fleet, FleetConfig
from kvmesh.common.procs import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and labels.items() <= s.labels.items())


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two sim workers (L1 + the kvmesh store as L2) behind a prefixaware router."""
    config = FleetConfig(engine="sim", workers=2, port=0, l1_size_bytes=1 << 30, l2="kvmesh",
                         store_memory_bytes=256 << 20, log_dir=tmp_path_factory.mktemp("fleet-logs"))
    with Fleet(config) as f:
        yield f


def test_bench_serve_end_to_end(fleet: Fleet, tmp_path: Path) -> None:
    assert fleet.url is not None
    out = subprocess.run(
        [sys.executable, "-m", "kvmesh", "bench", "serve", "--url", fleet.url, "--workload", "multiround",
         "--length-scale", "0.05", "--max-output-tokens", "8", "--num-requests", "20", "--concurrency", "4",
         "--seed", "7", "--json", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["requests_ok"], summary["requests_failed"]) == (20, 0)
    assert summary["output_tokens"] == 20 * 8  # ignore_eos + max_tokens: exact lengths
    # Every prompt token the client was billed for reached exactly one worker.
    assert summary["input_tokens"] == sum(_metric(u, "kvmesh_sim_prompt_tokens_total") for u in fleet.worker_urls)
    assert summary["cache_hit_ratio"] > 0  # later rounds reuse the conversation so far
    for key in ("ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "itl_p50_ms", "output_tokens_per_s",
                "cost_per_1k_tokens"):
        assert summary[key] > 0
    lines = (tmp_path / "requests.jsonl").read_text().splitlines()
    assert len(lines) == 20
    assert json.loads((tmp_path / "summary.json").read_text())["requests_ok"] == 20


def test_l2_serves_a_prefix_to_the_other_worker(fleet: Fleet) -> None:
    a, b = fleet.worker_urls
    prompt = " ".join(["the cache answers fast and the router routes"] * 80)
    written_before = _metric(a, "kvmesh_cache_written_bytes_total", tier="l2")
    first = _post(f"{a}/v1/completions", {"prompt": prompt, "max_tokens": 1})
    n = first["usage"]["prompt_tokens"]
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    chunks = n // 256
    # Worker b never saw the prompt: only the store can give it the chunks. L2 writes are
    # asynchronous, so wait until all of them (1 KiB placeholder each) have landed.
    wait_until(lambda: _metric(a, "kvmesh_cache_written_bytes_total", tier="l2") - written_before
               >= chunks * 1024, 10, "L2 writes")
    second = _post(f"{b}/v1/completions", {"prompt": prompt, "max_tokens": 1})
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == (n - 1) // 256 * 256


def test_kvaware_routes_to_the_worker_that_holds_the_kv(tmp_path: Path) -> None:
    config = parse_config_name("kvaware", FleetConfig(engine="sim", workers=2, port=0, log_dir=tmp_path))
    with Fleet(config) as f:
        assert f.url is not None
        for i, worker in enumerate(f.worker_urls):
            messages = [{"role": "user", "content": f"document {i}: " + "alpha beta gamma delta " * 150}]
            body = {"model": "demo", "messages": messages, "max_tokens": 1}
            direct = _post(f"{worker}/v1/chat/completions", body)
            batches = i + 1
            wait_until(lambda b=batches: _metric(f.url, "kvmesh_router_kv_event_batches_total") >= b,
                       10, "router applied the worker's KV events")
            routed = _post(f"{f.url}/v1/chat/completions", body)
            n = direct["usage"]["prompt_tokens"]
            # Only the worker that computed the prompt has its blocks: a block-level engine hit.
            assert routed["usage"]["prompt_tokens_details"]["cached_tokens"] == (n - 1) // 16 * 16
