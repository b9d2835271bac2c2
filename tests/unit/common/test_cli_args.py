from __future__ import annotations

import argparse

import pytest

from kvmesh.common.cli_args import (
    OneLineArgumentParser,
    duration_arg,
    port_arg,
    positive_int_arg,
    size_arg,
    size_list_arg,
)


def _parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="kvmesh demo")
    parser.add_argument("--size", type=size_arg)
    parser.add_argument("--sizes", type=size_list_arg)
    parser.add_argument("--deadline", type=duration_arg)
    parser.add_argument("--port", type=port_arg)
    parser.add_argument("--workers", type=positive_int_arg)
    return parser


def test_valid_values_are_converted() -> None:
    args = _parser().parse_args(
        ["--size", "4GiB", "--sizes", "2MiB,32MiB", "--deadline", "50ms", "--port", "0", "--workers", "2"])
    assert vars(args) == {"size": 4 << 30, "sizes": [2 << 20, 32 << 20], "deadline": 0.05, "port": 0, "workers": 2}


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--size", "4XB"], "kvmesh demo: error: argument --size: invalid size '4XB' (examples: 4GiB, 512MiB, 1048576)"),
        (["--port", "abc"], "kvmesh demo: error: argument --port: invalid port 'abc' (expected an integer)"),
        (["--port", "70000"], "kvmesh demo: error: argument --port: port must be in [0, 65535], got 70000"),
        (["--workers", "0"], "kvmesh demo: error: argument --workers: must be >= 1, got 0"),
        (["--deadline", "soon"], "kvmesh demo: error: argument --deadline: invalid duration 'soon' (examples: 500ms, 2s, 1.5)"),
    ],
)
def test_bad_values_print_one_line_naming_the_flag(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err == line + "\n"


def test_subparsers_inherit_the_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    parser = OneLineArgumentParser(prog="kvmesh")
    sub = parser.add_subparsers()
    child = sub.add_parser("store")
    child.add_argument("--memory-size", type=size_arg)
    assert isinstance(child, OneLineArgumentParser) and isinstance(child, argparse.ArgumentParser)
    with pytest.raises(SystemExit):
        parser.parse_args(["store", "--memory-size", "big"])
    assert capsys.readouterr().err.count("\n") == 1
