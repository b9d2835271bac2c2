"""``kvmesh router``: the cache-aware OpenAI-compatible router."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from kvmesh.common.cli_args import duration_arg, port_arg, positive_int_arg, size_arg
from kvmesh.common.hashing import DEFAULT_CHUNK_SIZE, DEFAULT_HASH_SEED


def _backend_arg(text: str):  # noqa: ANN202
    from kvmesh.router.config import BackendSpec

    try:
        return BackendSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _load_factor_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 1.0:
        raise argparse.ArgumentTypeError(f"must be >= 1.0, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("router", help="cache-aware OpenAI-compatible router")
    p.add_argument("--backend", action="append", type=_backend_arg, default=[], metavar="URL",
                   help="backend URL, optionally URL#events=tcp://HOST:PORT (repeatable)")
    p.add_argument("--k8s-namespace", help="discover workers in this namespace")
    p.add_argument("--k8s-selector", help="label selector of the workers")
    p.add_argument("--k8s-api-url", help="API server URL (default: in-cluster)")
    p.add_argument("--k8s-port", type=port_arg, default=8000, help="workers' serving port")
    p.add_argument("--k8s-resource", choices=["endpointslices", "pods"], default="endpointslices")
    p.add_argument("--routing-strategy", choices=["prefixaware", "kvaware", "session", "roundrobin"],
                   default="prefixaware")
    p.add_argument("--session-key", default="x-session-id", help="header or body field for session")
    p.add_argument("--model-dir", help="model dir with tokenizer.json + chat template (kvaware)")
    p.add_argument("--model-id", help="model id in chain hashes (default: the request's model)")
    p.add_argument("--chunk-size", type=positive_int_arg, default=DEFAULT_CHUNK_SIZE)
    p.add_argument("--hash-seed", type=int, default=DEFAULT_HASH_SEED)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_arg, default=8000)
    p.add_argument("--connect-timeout", type=duration_arg, default=2.0)
    p.add_argument("--read-timeout", type=duration_arg, default=60.0)
    p.add_argument("--health-interval", type=duration_arg, default=2.0)
    p.add_argument("--breaker-failures", type=positive_int_arg, default=3)
    p.add_argument("--breaker-cooldown", type=duration_arg, default=5.0)
    p.add_argument("--max-body-size", type=size_arg, default=4 << 20)
    p.add_argument("--tree-max-size", type=size_arg, default=64 << 20)
    p.add_argument("--load-factor", type=_load_factor_arg, default=1.25)
    p.add_argument("--load-slack", type=int, default=4, help="bounded-load slack in requests (>= 0)")
    p.add_argument("--load-smoothing", type=duration_arg, default=1.0,
                   help="time constant of the load average the affinity bound uses (0: raw counts)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run, _parser=p)


def build_config(args: argparse.Namespace):  # noqa: ANN201
    from kvmesh.router.config import RouterConfig

    return RouterConfig(
        backends=tuple(args.backend), k8s_namespace=args.k8s_namespace, k8s_selector=args.k8s_selector,
        k8s_api_url=args.k8s_api_url, k8s_port=args.k8s_port, k8s_resource=args.k8s_resource,
        strategy=args.routing_strategy, session_key=args.session_key, model_dir=args.model_dir,
        model_id=args.model_id, chunk_size=args.chunk_size, hash_seed=args.hash_seed, host=args.host,
        port=args.port, connect_timeout_s=args.connect_timeout, read_timeout_s=args.read_timeout,
        health_interval_s=args.health_interval, breaker_failures=args.breaker_failures,
        breaker_cooldown_s=args.breaker_cooldown, max_body_bytes=args.max_body_size,
        tree_max_bytes=args.tree_max_size, load_factor=args.load_factor,
        load_slack=args.load_slack, load_smoothing_s=args.load_smoothing)


def run(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except ValueError as exc:
        args._parser.error(str(exc))
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvloop

    uvloop.run(_serve(config))
    return 0


async def _serve(config) -> None:  # noqa: ANN001
    from kvmesh.router.app import RouterApp

    app = RouterApp(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    port = await app.start()
    # One parseable line: fixtures and scripts read the bound port from it.
    print(f"kvmesh router listening on http://{config.host}:{port} strategy={config.strategy}", flush=True)
    try:
        await stop.wait()
    finally:
        await app.stop()
