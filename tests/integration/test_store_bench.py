"""`kvmesh bench store --spawn` end to end, tiny sizes: output structure only (no timings)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvmesh.bench.store_bench import markdown

pytestmark = pytest.mark.integration
FIGURES = {
    "put_gbps", "put_p50_ms", "put_p99_ms", "get_gbps", "get_p50_ms", "get_p99_ms",
    "exists_prefix_ops", "exists_prefix_p50_ms", "exists_prefix_p99_ms",
}
ARGS = ["--spawn", "--value-size", "64KiB,1MiB", "--duration", "300ms", "--working-set",
        "4MiB", "--batch-bytes", "1MiB", "--clients", "2", "--rounds", "2"]


def bench(*extra: str) -> str:
    out = subprocess.run([sys.executable, "-m", "kvmesh", "bench", "store", *ARGS, *extra],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_json_has_one_object_per_value_size_and_renders_as_markdown() -> None:
    rows = json.loads(bench("--json"))
    assert [row["value_size_bytes"] for row in rows] == [64 << 10, 1 << 20]
    for row in rows:
        assert set(row) == {"value_size_bytes", "batch", "clients", "kvmesh", "kvmesh_shm",
                            "redis", "kvmesh_shm_active", "redis_hiredis"}
        assert row["kvmesh_shm_active"] is True and row["clients"] == 2
        assert row["batch"] == (1 << 20) // row["value_size_bytes"]
        for system in ("kvmesh", "kvmesh_shm", "redis"):
            assert set(row[system]) == FIGURES
            assert row[system]["get_gbps"] > 0 and row[system]["put_gbps"] > 0
    lines = markdown(rows).splitlines()
    assert lines[0].startswith("| value | system | GET GB/s |")
    assert [line.split("|")[2].strip() for line in lines[2:]] == [
        "kvmesh", "kvmesh_shm", "redis"] * 2
