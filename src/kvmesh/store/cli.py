"""``kvmesh store``: run the L2 tiered storage server."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kvmesh.common.cli_args import duration_arg, port_arg, size_arg
from kvmesh.store.config import DEFAULT_PORT, StoreConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``store`` subcommand."""
    parser = subparsers.add_parser(
        "store", help="run the L2 tiered storage server (memory + disk, shared memory)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=port_arg, default=DEFAULT_PORT, help="TCP port (9200)")
    parser.add_argument("--memory-size", type=size_arg, default="4GiB",
                        help="memory tier budget, e.g. 4GiB (a shared-memory segment)")
    parser.add_argument("--disk-path", type=Path, default=None,
                        help="directory of the disk tier (default: no disk tier)")
    parser.add_argument("--disk-size", type=size_arg, default="100GiB",
                        help="disk tier budget (default 100GiB)")
    parser.add_argument("--auth-token-file", type=Path, default=None,
                        help="file holding the shared auth token clients must present")
    parser.add_argument("--metrics-port", type=port_arg, default=None,
                        help="serve Prometheus /metrics on this port")
    parser.add_argument("--max-value-size", type=size_arg, default="256MiB",
                        help="largest value accepted (default 256MiB)")
    parser.add_argument("--max-request-size", type=size_arg, default="1GiB",
                        help="largest request body accepted (default 1GiB)")
    parser.add_argument("--lease-ttl", type=duration_arg, default="10s",
                        help="how long a shared-memory lease pins entries (default 10s)")
    parser.add_argument("--prefault", action="store_true",
                        help="allocate the whole memory tier at start (no page faults later)")
    parser.add_argument("--no-shm", action="store_true",
                        help="do not offer the same-host shared-memory read path")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    parser.set_defaults(func=run)


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"--auth-token-file: cannot read {path}: {exc.strerror}") from None
    if not token:
        raise ValueError(f"--auth-token-file: {path} is empty")
    return token


def config_from_args(args: argparse.Namespace) -> StoreConfig:
    """The :class:`StoreConfig` the flags describe; ``ValueError`` naming the bad flag."""
    token = _read_token(args.auth_token_file)
    try:
        return StoreConfig(
            host=args.host, port=args.port, memory_size_bytes=args.memory_size,
            disk_path=args.disk_path, disk_size_bytes=args.disk_size, auth_token=token,
            metrics_port=args.metrics_port, max_value_size_bytes=args.max_value_size,
            max_request_size_bytes=args.max_request_size, lease_ttl_s=args.lease_ttl,
            shm_enabled=not args.no_shm, prefault=args.prefault,
        )
    except ValueError as exc:
        raise ValueError(f"invalid store configuration: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM; exit status 0 after a graceful shutdown."""
    import uvloop

    from kvmesh.store.server import StoreServer

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        sys.stderr.write(f"kvmesh store: error: {exc}\n")
        return 2

    async def main() -> None:
        server = StoreServer(config)
        await server.start()
        disk = f", disk {config.disk_path}" if config.disk_path else ""
        print(f"kvmesh store listening on {config.host}:{server.port}{disk}", flush=True)
        await server.serve_until_stopped()

    try:
        uvloop.run(main())
    except OSError as exc:
        sys.stderr.write(f"kvmesh store: error: {exc}\n")
        return 1
    return 0
