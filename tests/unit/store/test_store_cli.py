from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvmesh.cli import build_parser
from kvmesh.store.cli import config_from_args
from kvmesh.store.config import GiB, StoreConfig


def one_line_error(*argv: str) -> str:
    out = subprocess.run([sys.executable, "-m", "kvmesh", *argv], capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize("argv, flag", [
    (["store", "--memory-size", "4XB"], "--memory-size"),
    (["store", "--port", "70000"], "--port"),
    (["bench", "store", "--value-size", "2QB"], "--value-size"),
    (["bench", "store", "--clients", "0"], "--clients"),
])
def test_bad_flags_print_one_line_naming_the_flag(argv: list[str], flag: str) -> None:
    assert flag in one_line_error(*argv)


def test_flags_map_to_config(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    args = build_parser().parse_args([
        "store", "--port", "9300", "--memory-size", "2GiB", "--disk-path", str(tmp_path),
        "--disk-size", "10GiB", "--auth-token-file", str(token), "--lease-ttl", "500ms",
        "--no-shm",
    ])
    assert config_from_args(args) == StoreConfig(
        port=9300, memory_size_bytes=2 * GiB, disk_path=tmp_path, disk_size_bytes=10 * GiB,
        auth_token="t0ken", lease_ttl_s=0.5, shm_enabled=False,
    )


def test_bad_token_file_and_config_values_are_value_errors(tmp_path: Path) -> None:
    args = build_parser().parse_args(["store", "--auth-token-file", str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="--auth-token-file"):
        config_from_args(args)
    with pytest.raises(ValueError, match="memory_size_bytes"):
        StoreConfig(memory_size_bytes=10)
    with pytest.raises(ValueError, match="max_value_size_bytes"):
        StoreConfig(max_value_size_bytes=2 * GiB, max_request_size_bytes=GiB)
