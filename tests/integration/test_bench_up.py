"""``kvmesh up --engine sim``: starts the whole fleet, serves, and stops with no orphan processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from kvmesh.common.procs import find_free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_serves_then_stops_every_child(tmp_path: Path, sig: signal.Signals) -> None:
    port = find_free_port()
    out_path = tmp_path / "up.out"
    with out_path.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kvmesh", "up", "--engine", "sim", "--workers", "2", "--port", str(port),
             "--l2", "kvmesh", "--store-memory-size", "64MiB", "--log-dir", str(tmp_path / "logs")],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "kvmesh fleet ready" in out_path.read_text(), 120, "kvmesh up",
                   alive=lambda: proc.poll() is None)
        url = f"http://127.0.0.1:{port}"
        assert f"kvmesh fleet ready: {url}" in out_path.read_text()
        with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as resp:
            assert json.loads(resp.read())["data"][0]["id"] == "demo"
        children = _children(proc.pid)
        # store + one sim-worker process (2 workers share it) + router
        assert len(children) >= 3
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        wait_until(lambda: not any(_alive(c) for c in children), 10, "children gone")
        assert sorted((tmp_path / "logs").glob("*.log")) == [
            tmp_path / "logs" / name for name in ("router.log", "sim-0.log", "store.log")]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "kvmesh up: stopped" in out_path.read_text()


def test_up_bad_flag_is_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "kvmesh", "up", "--workers", "0"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--workers" in lines[0]


def test_up_reports_a_dead_child_and_stops(tmp_path: Path) -> None:
    port = find_free_port()
    out_path = tmp_path / "up.out"
    with out_path.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kvmesh", "up", "--engine", "sim", "--workers", "1", "--port", str(port),
             "--l2", "none", "--log-dir", str(tmp_path / "logs")], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "kvmesh fleet ready" in out_path.read_text(), 120, "kvmesh up",
                   alive=lambda: proc.poll() is None)
        children = _children(proc.pid)
        router = next(c for c in children if "router" in Path(f"/proc/{c}/cmdline").read_text())
        os.kill(router, signal.SIGKILL)
        assert proc.wait(timeout=60) == 1
        assert "router exited; stopping the fleet" in out_path.read_text()
        wait_until(lambda: not any(_alive(c) for c in children), 10, "children gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
