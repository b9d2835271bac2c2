from __future__ import annotations

import subprocess
import sys

import pytest

from kvmesh.cli import build_parser
from kvmesh.sim.cli import build_configs


def _configs(*argv: str) -> list:
    return build_configs(build_parser().parse_args(["sim-worker", *argv]))


def test_replicas_take_consecutive_ports_and_event_endpoints() -> None:
    configs = _configs("--port", "9000", "--replicas", "3", "--kv-events-endpoint", "tcp://127.0.0.1:7000")
    assert [c.port for c in configs] == [9000, 9001, 9002]
    assert [c.kv_events_endpoint for c in configs] == [
        "tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"]


def test_port_lists() -> None:
    configs = _configs("--ports", "9005,9009", "--kv-events-ports", "7005,7009", "--max-batch", "4")
    assert [(c.port, c.kv_events_endpoint) for c in configs] == [
        (9005, "tcp://127.0.0.1:7005"), (9009, "tcp://127.0.0.1:7009")]
    assert all(c.preset.max_batch == 4 for c in configs)
    with pytest.raises(ValueError, match="--kv-events-ports has 1 ports for 2"):
        _configs("--ports", "9005,9009", "--kv-events-ports", "7005")


@pytest.mark.parametrize(("flag", "value"), [("--ports", "1,x"), ("--max-batch", "0"), ("--l1-size", "4XB"),
                                              ("--preset", "tpu")])
def test_bad_flag_is_one_line_naming_it(flag: str, value: str) -> None:
    out = subprocess.run([sys.executable, "-m", "kvmesh", "sim-worker", flag, value],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0]
