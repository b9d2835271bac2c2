from __future__ import annotations

import subprocess
import sys

import pytest

from kvmesh.cli import main


def test_help_lists_bench(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_unknown_command_is_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "kvmesh", "nope"], capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0]
