"""Argument parsing shared by every ``kvmesh`` subcommand.

Bad input on the command line prints exactly one line that names the flag,
for example ``kvmesh store: error: argument --memory-size: invalid size '4XB'``,
and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from kvmesh.common.units import parse_duration_s, parse_size, parse_size_list


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line on stderr."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _typed(parse, name: str):  # noqa: ANN001, ANN202
    def convert(text: str):  # noqa: ANN202
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


size_arg = _typed(parse_size, "size")
"""argparse ``type=`` for sizes such as ``4GiB``."""

size_list_arg = _typed(parse_size_list, "size list")
"""argparse ``type=`` for comma-separated sizes such as ``2MiB,32MiB``."""

duration_arg = _typed(parse_duration_s, "duration")
"""argparse ``type=`` for durations such as ``500ms`` (value in seconds)."""


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"invalid {what} {text!r} (expected an integer)") from None


def _positive_int(text: str) -> int:
    value = _int(text, "count")
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _int(text, "port")
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be in [0, 65535], got {value}")
    return value


positive_int_arg = _typed(_positive_int, "positive integer")
"""argparse ``type=`` for counts that must be at least 1."""

port_arg = _typed(_port, "port")
"""argparse ``type=`` for TCP ports (0 means any free port)."""
