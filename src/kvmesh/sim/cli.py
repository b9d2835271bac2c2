"""``kvmesh sim-worker``: serve one (or several) simulated OpenAI workers."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from kvmesh.common.cli_args import port_arg, positive_int_arg, size_arg

if TYPE_CHECKING:
    from kvmesh.sim.config import SimConfig
    from kvmesh.sim.worker import SimWorker


def register(subparsers: argparse._SubParsersAction) -> None:
    from kvmesh.sim.presets import DEFAULT_PRESET, PRESETS

    p = subparsers.add_parser("sim-worker", help="serve a simulated vLLM worker (calibrated latency model)")
    p.add_argument("--port", type=port_arg, default=8100, help="port of the first replica (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--replicas", type=positive_int_arg, default=1,
                   help="independent workers in this process, on consecutive ports")
    p.add_argument("--ports", type=_port_list, default=None,
                   help="comma-separated ports, one worker each (overrides --port/--replicas)")
    p.add_argument("--kv-events-ports", type=_port_list, default=None,
                   help="comma-separated KV event PUB ports, one per --ports entry")
    p.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET, help="calibrated engine model")
    p.add_argument("--model", default="demo", help="served model name (default demo)")
    p.add_argument("--model-dir", default=None, help="use this model's tokenizer and chat template")
    p.add_argument("--prefill-tokens-per-s", type=float, default=None, help="override the preset")
    p.add_argument("--decode-ms-per-token", type=float, default=None, help="override the preset")
    p.add_argument("--kv-capacity-tokens", type=positive_int_arg, default=None, help="override the preset")
    p.add_argument("--max-batch", type=positive_int_arg, default=None, help="override the preset")
    p.add_argument("--chunk-size", type=positive_int_arg, default=256, help="tokens per fleet chunk")
    p.add_argument("--block-size", type=positive_int_arg, default=16, help="tokens per engine cache block")
    p.add_argument("--hash-seed", type=int, default=0, help="chain-hash seed (fleet-wide)")
    p.add_argument("--l1-size", type=size_arg, default=0, help="L1 CPU tier budget, e.g. 4GiB (0: off)")
    p.add_argument("--l2-url", default=None, help="L2 URL: kvmesh://HOST:PORT, redis://..., memory://")
    p.add_argument("--kv-events-endpoint", default=None,
                   help="ZeroMQ PUB endpoint for KV events, e.g. tcp://127.0.0.1:5557 (+1 per replica)")
    p.set_defaults(func=run)


def _port_list(text: str) -> list[int]:
    try:
        ports = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port list {text!r}") from None
    if not ports or any(not 0 < p <= 65535 for p in ports):
        raise argparse.ArgumentTypeError(f"invalid port list {text!r} (ports in [1, 65535])")
    return ports


def _nth_endpoint(endpoint: str | None, index: int) -> str | None:
    """The replica's event endpoint: the port shifted by ``index`` (0 stays 'any')."""
    if endpoint is None or index == 0:
        return endpoint
    parts = urlsplit(endpoint)
    if parts.port in (None, 0):
        return endpoint
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port + index}"))


def build_configs(args: argparse.Namespace) -> list[SimConfig]:
    """One config per replica; ``ValueError`` names the bad setting."""
    from kvmesh.sim.config import SimConfig
    from kvmesh.sim.presets import get_preset

    preset = get_preset(args.preset).with_overrides(
        prefill_tokens_per_s=args.prefill_tokens_per_s, decode_ms_per_token=args.decode_ms_per_token,
        kv_capacity_tokens=args.kv_capacity_tokens, max_batch=args.max_batch)
    base = SimConfig(
        preset=preset, model_id=args.model, host=args.host, port=args.port, chunk_size=args.chunk_size,
        block_size=args.block_size, hash_seed=args.hash_seed, model_dir=args.model_dir,
        l1_size_bytes=args.l1_size, l2_url=args.l2_url, kv_events_endpoint=args.kv_events_endpoint)
    if args.ports is not None:
        events = args.kv_events_ports
        if events is not None and len(events) != len(args.ports):
            raise ValueError(f"--kv-events-ports has {len(events)} ports for {len(args.ports)} --ports")
        return [
            dataclasses.replace(base, port=port, kv_events_endpoint=(
                f"tcp://{args.host}:{events[i]}" if events is not None else None))
            for i, port in enumerate(args.ports)
        ]
    if args.kv_events_ports is not None:
        raise ValueError("--kv-events-ports needs --ports")
    return [
        dataclasses.replace(base, port=args.port + i if args.port else 0,
                            kv_events_endpoint=_nth_endpoint(args.kv_events_endpoint, i))
        for i in range(args.replicas)
    ]


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from kvmesh.sim.worker import serve_forever

    try:
        configs = build_configs(args)
    except ValueError as exc:
        print(f"kvmesh sim-worker: error: {exc}", file=sys.stderr)
        return 2

    def ready(workers: list[SimWorker]) -> None:
        for w in workers:
            print(f"sim-worker ready: {w.url} (preset {w.config.preset.name})", flush=True)

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is a core dependency; tolerate its absence anyway
        pass
    try:
        asyncio.run(serve_forever(configs, ready))
    except (OSError, ValueError) as exc:  # port in use and the like
        print(f"kvmesh sim-worker: error: {exc}", file=sys.stderr)
        return 1
    return 0
