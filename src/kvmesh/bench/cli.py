"""``kvmesh bench <name>``: each benchmark registers from its own module.

Every benchmark prints a Markdown table by default and one JSON document with
``--json``; its module exposes ``register(subparsers)`` like the top-level CLI.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS: dict[str, str] = {
    "cache": "kvmesh.bench.cache_bench",
    "store": "kvmesh.bench.store_bench",
    "ttft": "kvmesh.bench.ttft_bench",
    "router": "kvmesh.bench.router_bench",
    "serve": "kvmesh.bench.serve_cli",
    "compare": "kvmesh.bench.compare_cli",
}
"""Benchmark name -> module with ``register(subparsers)``."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark (JSON and Markdown output)")
    bench_subparsers = parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    for module_name in BENCHMARKS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(bench_subparsers)
    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])
