"""``kvmesh bench cache``: JSON shape, Markdown output, one-line flag errors.

Tiny sizes: this checks the report, not the speed (speed lives in the benchmark itself).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

TINY = ["--iterations", "2", "--chunk-sizes", "64KiB,2MiB", "--working-set", "4MiB"]


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvmesh", "bench", "cache", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_json_report_has_every_field() -> None:
    out = _bench("--json", *TINY)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    # the 2 MiB demo chunk is reported at top level, both sizes in by_chunk_size
    assert report["chunk_bytes"] == 2 << 20 and report["chunk"] == "demo 2 MiB"
    assert [r["chunk_bytes"] for r in report["by_chunk_size"]] == [64 << 10, 2 << 20]
    for r in [report, *report["by_chunk_size"]]:
        assert set(r["l1"]) == {"put_gbps", "get_gbps"}
        assert set(r["redis"]) == {
            "put_gbps",
            "get_gbps",
            "put_p50_ms",
            "put_p99_ms",
            "get_p50_ms",
            "get_p99_ms",
        }
        numbers = [r["memcpy_gbps"], *r["l1"].values(), *r["redis"].values()]
        assert all(isinstance(x, float) and x > 0 for x in numbers)
        assert r["l1_get_vs_memcpy"] == pytest.approx(
            r["l1"]["get_gbps"] / r["memcpy_gbps"], rel=0.01
        )
    assert report["redis_server"] == "own redis-server on loopback"


def test_markdown_is_the_default() -> None:
    out = _bench(*TINY)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("| chunk | memcpy GB/s | L1 put GB/s | L1 get GB/s |")
    assert lines[1].startswith("|---|")
    assert [line.split("|")[1].strip() for line in lines[2:4]] == ["64KiB", "demo 2 MiB"]


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--chunk-sizes", "2XB"), ("--iterations", "0"), ("--working-set", "lots")],
)
def test_bad_flag_is_one_line_naming_it(flag: str, value: str) -> None:
    out = _bench(flag, value)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0]
