"""The load generator against an in-process sim worker (fast preset)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from kvmesh.bench.runner import LoadConfig, run_load
from kvmesh.bench.workloads import WorkloadOptions, create_workload
from kvmesh.common.procs import find_free_port
from kvmesh.sim.config import SimConfig
from kvmesh.sim.presets import get_preset
from kvmesh.sim.worker import SimWorker


@pytest.fixture
async def worker_url() -> AsyncIterator[str]:
    preset = get_preset("vllm-cpu-demo").with_overrides(
        prefill_tokens_per_s=1e6, prefill_attn_s_per_token2=0.0, request_overhead_ms=1.0, decode_ms_per_token=1.0)
    worker = await SimWorker(SimConfig(preset=preset, port=0)).start()
    try:
        yield worker.url
    finally:
        await worker.stop()


def _workload() -> object:
    return create_workload("multiround", WorkloadOptions(seed=5, length_scale=0.02, max_output_tokens=3))


async def test_conversation_budget_replays_whole_conversations(worker_url: str) -> None:
    config = LoadConfig(url=worker_url, concurrency=2, num_conversations=3)
    records, wall_s = await run_load(config, _workload())  # type: ignore[arg-type]
    assert wall_s > 0
    by_conv: dict[str, list[int]] = {}
    for r in records:
        by_conv.setdefault(r.conv_id, []).append(r.turn)
    assert by_conv == {f"multiround-{i}": [0, 1, 2, 3, 4] for i in range(3)}  # turns in order
    assert all(r.ok and r.output_tokens == 3 for r in records)
    # Each turn's prompt is the previous turn's prompt plus at least the answer and a question.
    conv0 = sorted((r for r in records if r.conv_id == "multiround-0"), key=lambda r: r.turn)
    assert all(b.input_tokens > a.input_tokens for a, b in zip(conv0, conv0[1:]))
    assert all(b.cached_tokens > 0 for b in conv0[1:])  # the engine reuses the conversation so far


async def test_request_budget_is_exact(worker_url: str) -> None:
    records, _ = await run_load(LoadConfig(url=worker_url, concurrency=3, num_requests=7), _workload())  # type: ignore[arg-type]
    assert len(records) == 7 and all(r.ok for r in records)


async def test_unreachable_endpoint_fails_requests_not_the_run() -> None:
    url = f"http://127.0.0.1:{find_free_port()}"
    config = LoadConfig(url=url, model="demo", concurrency=1, num_requests=2, request_timeout_s=5)
    records, _ = await run_load(config, _workload())  # type: ignore[arg-type]
    assert [r.ok for r in records] == [False, False]
    assert all(r.error and "Connect" in r.error for r in records)


@pytest.mark.parametrize(
    "bad", [{"url": "localhost:8000"}, {"concurrency": 0}, {"qps": 0.0}, {"num_requests": None},
            {"duration_s": -1.0}, {"num_conversations": 0}],
)
def test_load_config_validates(bad: dict[str, object]) -> None:
    args: dict[str, object] = {"url": "http://127.0.0.1:1", "num_requests": 1, **bad}
    if "num_conversations" in bad or "duration_s" in bad:
        args["num_requests"] = None
    with pytest.raises(ValueError):
        LoadConfig(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("flag", "value"), [("--workload", "nope"), ("--concurrency", "0"),
                                              ("--qps", "-1"), ("--duration", "soon")])
def test_serve_bad_flag_is_one_line(flag: str, value: str) -> None:
    argv = ["--url", "http://127.0.0.1:1", "--workload", "multiround", flag, value]
    out = subprocess.run([sys.executable, "-m", "kvmesh", "bench", "serve", *argv],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0]
