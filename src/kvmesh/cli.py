"""The ``kvmesh`` command line.

Each subcommand lives with its subsystem, in a module that exposes
``register(subparsers)``: it adds its parser and sets ``func`` to a callable
taking the parsed namespace and returning an exit status. Those modules keep
heavy imports inside ``func`` so that ``kvmesh --help`` stays fast and the
router never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from kvmesh import __version__
from kvmesh.common.cli_args import OneLineArgumentParser

SUBCOMMANDS: dict[str, str] = {
    "store": "kvmesh.store.cli",
    "worker": "kvmesh.connector.worker_cli",
    "model": "kvmesh.connector.model_cli",
    "router": "kvmesh.router.cli",
    "sim-worker": "kvmesh.sim.cli",
    "up": "kvmesh.bench.fleet_cli",
    "bench": "kvmesh.bench.cli",
    "operator": "kvmesh.k8s.cli",
}
"""Subcommand name -> module with ``register(subparsers)``."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered."""
    parser = OneLineArgumentParser(prog="kvmesh", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kvmesh {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A subsystem that is not built yet is simply absent; any other
            # missing import is a real bug and propagates.
            if exc.name != module_name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kvmesh`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return int(func(args) or 0)
