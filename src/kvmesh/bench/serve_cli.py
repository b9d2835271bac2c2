"""``kvmesh bench serve``: the load generator against any OpenAI endpoint."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from kvmesh.common.cli_args import duration_arg, positive_int_arg

if TYPE_CHECKING:  # heavy imports stay inside the functions (fast ``kvmesh --help``)
    from kvmesh.bench.runner import LoadConfig
    from kvmesh.bench.workloads import WorkloadOptions


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_workload_args(p: argparse.ArgumentParser) -> None:
    """Flags that choose and shape the workload (shared with ``bench compare``)."""
    p.add_argument("--workload", required=True,
                   help="what to replay: sharegpt, multiround, longdoc or shared-prompt")
    p.add_argument("--seed", type=int, default=0, help="workload and pacing seed")
    p.add_argument("--length-scale", type=_positive_float, default=1.0,
                   help="multiply synthetic prompt lengths (0.1 for CPU runs)")
    p.add_argument("--context", choices=("8k", "64k"), default="8k", help="longdoc document class")
    p.add_argument("--max-output-tokens", type=positive_int_arg, default=128, help="cap on output tokens")
    p.add_argument("--max-prompt-tokens", type=positive_int_arg, default=8192,
                   help="sharegpt: end a conversation before a longer prompt")


def add_load_args(p: argparse.ArgumentParser) -> None:
    """Flags that shape the load (shared with ``bench compare``)."""
    p.add_argument("--concurrency", type=positive_int_arg, default=8, help="sessions at once")
    p.add_argument("--qps", type=_positive_float, default=None, help="cap on request starts per second")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--num-requests", type=positive_int_arg, default=None, help="requests to send")
    budget.add_argument("--duration", type=duration_arg, default=None, help="how long to send, e.g. 60s")
    p.add_argument("--num-conversations", type=positive_int_arg, default=None,
                   help="start at most this many conversations (with no other budget: replay them all)")
    p.add_argument("--request-timeout", type=duration_arg, default=600.0, help="per-request deadline")
    p.add_argument("--price-per-hour", type=_nonnegative_float, default=1.0,
                   help="fleet price in USD per hour, for cost per 1K tokens")
    p.add_argument("--output", default=None, help="directory for summary.json and requests.jsonl")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of Markdown")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="load-test an OpenAI endpoint with a workload")
    p.add_argument("--url", required=True, help="endpoint base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", default=None, help="model name (default: the first of /v1/models)")
    add_workload_args(p)
    add_load_args(p)
    p.set_defaults(func=run)


def check_workload(name: str) -> None:
    """``ValueError`` naming the flag when ``--workload`` is not a registered workload."""
    from kvmesh.bench.workloads import WORKLOADS

    if name not in WORKLOADS:
        raise ValueError(f"argument --workload: unknown workload {name!r}; choose from {sorted(WORKLOADS)}")


def workload_options(args: argparse.Namespace) -> WorkloadOptions:
    """The workload knobs the flags describe; ``ValueError`` on a bad combination."""
    from kvmesh.bench.workloads import WorkloadOptions

    return WorkloadOptions(seed=args.seed, length_scale=args.length_scale, context=args.context,
                           max_output_tokens=args.max_output_tokens, max_prompt_tokens=args.max_prompt_tokens)


def load_config(args: argparse.Namespace, url: str) -> LoadConfig:
    """The load shape the flags describe (100 requests when no budget is given)."""
    from kvmesh.bench.runner import LoadConfig

    num_requests = args.num_requests
    if num_requests is None and args.duration is None and args.num_conversations is None:
        num_requests = 100
    return LoadConfig(url=url.rstrip("/"), model=getattr(args, "model", None), concurrency=args.concurrency,
                      qps=args.qps, num_requests=num_requests, duration_s=args.duration,
                      num_conversations=args.num_conversations, seed=args.seed,
                      request_timeout_s=args.request_timeout)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    from pathlib import Path

    from kvmesh.bench.report import serve_markdown, write_run
    from kvmesh.bench.runner import run_load
    from kvmesh.bench.stats import summarize
    from kvmesh.bench.workloads import create_workload

    try:
        check_workload(args.workload)
        workload = create_workload(args.workload, workload_options(args))
        config = load_config(args, args.url)
    except ValueError as exc:
        print(f"kvmesh bench serve: error: {exc}", file=sys.stderr)
        return 2
    try:
        records, wall_s = asyncio.run(run_load(config, workload, progress=sys.stderr.isatty()))
    except (OSError, ValueError) as exc:
        print(f"kvmesh bench serve: error: {args.url}: {exc}", file=sys.stderr)
        return 1
    summary = summarize(records, wall_s, args.price_per_hour)
    meta = {"workload": args.workload, "url": args.url, "seed": args.seed, "concurrency": args.concurrency}
    if args.output:
        write_run(Path(args.output), summary, records, meta)
    if args.json:
        print(json.dumps({**meta, **summary.to_dict()}))
    else:
        print(serve_markdown(summary, f"bench serve: {args.workload} against {args.url}"))
    return 0 if summary.requests_ok else 1
