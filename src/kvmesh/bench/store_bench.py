"""``kvmesh bench store``: kvmesh store (TCP and shared memory) against redis-server, one run.

For each value size, every system gets the same workload:

- PUT: ``--clients`` concurrent writers store a working set of distinct keys in
  batches of ``--batch-bytes``; throughput = value bytes / wall time.
- GET: for ``--duration``, each client reads random batches of stored keys;
  throughput = value bytes received / wall time, latency per batch call.
- EXISTS_PREFIX: 64-key lookups of present keys, latency per call.

GET and EXISTS_PREFIX run in ``--rounds`` short rounds that alternate between
the systems, so that load from other processes on the machine hits all of
them alike instead of skewing whichever system ran during a burst.

Redis is driven with redis.asyncio directly (pipelined SET, MGET, pipelined
EXISTS) and the hiredis reply parser when installed (the ``bench`` extra
installs it): the fastest way a Python client can use Redis. Each result row
says whether hiredis was used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvmesh.common.cli_args import duration_arg, positive_int_arg, size_arg, size_list_arg
from kvmesh.common.units import format_size

EXISTS_BATCH = 64
SYSTEMS = ("kvmesh", "kvmesh_shm", "redis")


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run."""

    value_sizes: tuple[int, ...]
    """Value sizes to measure, in bytes."""
    clients: int = 4
    """Concurrent client tasks per system (each with its own connection)."""
    duration_s: float = 3.0
    """Length of the GET phase per system and size."""
    working_set_bytes: int = 256 << 20
    """Bytes of distinct values written (and read back) per system and size."""
    batch_bytes: int = 16 << 20
    """Bytes per batched request; a batch holds at least one value."""
    rounds: int = 3
    """GET/EXISTS phases are split into this many rounds, interleaved across systems."""

    def __post_init__(self) -> None:
        if not self.value_sizes or min(self.value_sizes) < 1:
            raise ValueError("value_sizes must be non-empty and positive")
        if min(self.clients, self.batch_bytes, self.rounds) < 1 or self.duration_s <= 0:
            raise ValueError("clients, duration_s, batch_bytes and rounds must be positive")

    def batch(self, value_size: int) -> int:
        """Values per request at ``value_size``."""
        return max(1, self.batch_bytes // value_size)

    def num_keys(self, value_size: int) -> int:
        """Distinct keys written at ``value_size``: the working set, >= one batch per client."""
        return max(self.working_set_bytes // value_size, self.batch(value_size) * self.clients)


class RedisTarget:
    """put/get/exists over redis.asyncio, pipelined."""

    def __init__(self, url: str, clients: int) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(url, max_connections=clients + 1)

    async def put_many(self, items: Sequence[tuple[bytes, Any]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for key, value in items:
            pipe.set(key, value)
        await pipe.execute()

    async def get_many(self, keys: Sequence[bytes]) -> list[Any]:
        return list(await self._client.mget(keys))

    async def exists_prefix(self, keys: Sequence[bytes]) -> int:
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        found = await pipe.execute()
        return next((i for i, hit in enumerate(found) if not hit), len(keys))

    async def delete_many(self, keys: Sequence[bytes]) -> None:
        for i in range(0, len(keys), 1024):
            await self._client.delete(*keys[i:i + 1024])

    async def close(self) -> None:
        await self._client.aclose()


async def _timed_loop(
    clients: int, work: Callable[[int, int], Awaitable[int]], stop: Callable[[int, int], bool]
) -> tuple[float, int, list[float]]:
    """Run ``work(client, i)`` in ``clients`` tasks until ``stop``; (wall s, bytes, latencies s)."""
    latencies: list[float] = []
    moved = 0

    async def client(c: int) -> None:
        nonlocal moved
        i = 0
        while not stop(c, i):
            t0 = time.perf_counter()
            done = await work(c, i)  # not `moved += await ...`: that reads `moved` before
            moved += done  # the await and loses the other clients' updates
            latencies.append(time.perf_counter() - t0)
            i += 1

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return time.perf_counter() - start, moved, latencies


def _ms(latencies: list[float], q: float) -> float:
    return round(float(np.percentile(latencies, q)) * 1e3, 3) if latencies else 0.0


@dataclass
class Phase:
    """What one system did in one phase (summed over rounds)."""

    wall_s: float = 0.0
    moved_bytes: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def add(self, result: tuple[float, int, list[float]]) -> None:
        self.wall_s += result[0]
        self.moved_bytes += result[1]
        self.latencies_s += result[2]

    def gbps(self) -> float:
        return round(self.moved_bytes / self.wall_s / 1e9, 3) if self.wall_s else 0.0


class SystemRun:
    """One system's keys and phases at one value size."""

    def __init__(self, target: Any, value_size: int, cfg: BenchConfig) -> None:
        self.target, self.value_size, self.cfg = target, value_size, cfg
        self.batch = cfg.batch(value_size)
        self.keys = [os.urandom(16) for _ in range(cfg.num_keys(value_size))]
        self.rng = random.Random(1)
        self.put, self.get, self.exists = Phase(), Phase(), Phase()

    async def run_put(self) -> None:
        value = np.random.default_rng(0).integers(0, 255, self.value_size, dtype=np.uint8).data
        per_client = [self.keys[c::self.cfg.clients] for c in range(self.cfg.clients)]
        batch = self.batch

        async def put(c: int, i: int) -> int:
            chunk = per_client[c][i * batch:(i + 1) * batch]
            await self.target.put_many([(k, value) for k in chunk])
            return len(chunk) * self.value_size

        self.put.add(await _timed_loop(
            self.cfg.clients, put, lambda c, i: i * batch >= len(per_client[c])))

    async def run_get(self, duration_s: float) -> None:
        async def get(c: int, i: int) -> int:
            got = await self.target.get_many(self.rng.sample(self.keys, self.batch))
            if any(v is None for v in got):
                raise RuntimeError("benchmark read a key it had written and got a miss")
            return sum(memoryview(v).nbytes for v in got)

        deadline = time.perf_counter() + duration_s
        self.get.add(await _timed_loop(
            self.cfg.clients, get, lambda c, i: time.perf_counter() >= deadline))

    async def run_exists(self, duration_s: float) -> None:
        probe = self.keys[:EXISTS_BATCH]

        async def exists(c: int, i: int) -> int:
            if await self.target.exists_prefix(probe) != len(probe):
                raise RuntimeError("EXISTS_PREFIX undercounted present keys")
            return 0

        deadline = time.perf_counter() + duration_s
        self.exists.add(await _timed_loop(
            self.cfg.clients, exists, lambda c, i: time.perf_counter() >= deadline))

    def figures(self) -> dict[str, float]:
        put, get, ex = self.put.latencies_s, self.get.latencies_s, self.exists.latencies_s
        return {
            "put_gbps": self.put.gbps(), "put_p50_ms": _ms(put, 50), "put_p99_ms": _ms(put, 99),
            "get_gbps": self.get.gbps(), "get_p50_ms": _ms(get, 50), "get_p99_ms": _ms(get, 99),
            "exists_prefix_ops": round(len(ex) / self.exists.wall_s, 1) if ex else 0.0,
            "exists_prefix_p50_ms": _ms(ex, 50), "exists_prefix_p99_ms": _ms(ex, 99),
        }


async def measure_size(targets: dict[str, Any], size: int, cfg: BenchConfig) -> dict[str, Any]:
    """Every system at one value size. GET and EXISTS run in interleaved rounds, so a
    burst of load from elsewhere on the machine hits every system alike."""
    runs = {name: SystemRun(target, size, cfg) for name, target in targets.items()}
    for run in runs.values():
        await run.run_put()
    for _ in range(cfg.rounds):
        for run in runs.values():
            await run.run_get(cfg.duration_s / cfg.rounds)
        for run in runs.values():
            await run.run_exists(min(1.0, cfg.duration_s) / cfg.rounds)
    for run in runs.values():  # the next size starts from empty servers
        await run.target.delete_many(run.keys)
    row: dict[str, Any] = {"value_size_bytes": size, "batch": cfg.batch(size),
                           "clients": cfg.clients}
    row.update({name: run.figures() for name, run in runs.items()})
    return row


def _hiredis_available() -> bool:
    from redis.utils import HIREDIS_AVAILABLE

    return bool(HIREDIS_AVAILABLE)


async def run_bench(store_url: str, redis_url: str, cfg: BenchConfig) -> list[dict[str, Any]]:
    """Measure every system at every value size; one result object per size."""
    from kvmesh.store.client import StoreL2Backend

    sep = "&" if "?" in store_url else "?"
    results: list[dict[str, Any]] = []
    async with AsyncExitStack() as stack:
        targets: dict[str, Any] = {
            "kvmesh": StoreL2Backend.from_url(f"{store_url}{sep}shm=0&pool={cfg.clients}"),
            "kvmesh_shm": StoreL2Backend.from_url(f"{store_url}{sep}shm=1&pool={cfg.clients}"),
            "redis": RedisTarget(redis_url, cfg.clients),
        }
        for target in targets.values():
            stack.push_async_callback(target.close)
        for size in cfg.value_sizes:
            row = await measure_size(targets, size, cfg)
            row["kvmesh_shm_active"] = all(targets["kvmesh_shm"].shm_active)
            row["redis_hiredis"] = _hiredis_available()
            results.append(row)
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table, with GET speedups over Redis."""
    lines = [
        "| value | system | GET GB/s | GET p50 ms | GET p99 ms | PUT GB/s | EXISTS_PREFIX p50 ms "
        "| GET vs redis |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        redis_get = row["redis"]["get_gbps"] or float("nan")
        for name in SYSTEMS:
            r = row[name]
            lines.append(
                f"| {format_size(row['value_size_bytes'])} | {name} | {r['get_gbps']:.2f} | "
                f"{r['get_p50_ms']:.2f} | {r['get_p99_ms']:.2f} | {r['put_gbps']:.2f} | "
                f"{r['exists_prefix_p50_ms']:.3f} | {r['get_gbps'] / redis_get:.2f}x |"
            )
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kvmesh bench store``."""
    parser = subparsers.add_parser("store", help="kvmesh store (TCP, shm) vs redis-server")
    parser.add_argument("--spawn", action="store_true",
                        help="start a kvmesh store and a redis-server for the run")
    parser.add_argument("--url", default=None, help="kvmesh://host:port of a running store")
    parser.add_argument("--compare", default="redis",
                        help="redis://host:port of a running Redis, or 'redis' to start one")
    parser.add_argument("--value-size", type=size_list_arg, default="2MiB,32MiB",
                        help="comma-separated value sizes (default 2MiB,32MiB)")
    parser.add_argument("--clients", type=positive_int_arg, default=4, help="concurrent clients")
    parser.add_argument("--duration", type=duration_arg, default="3s", help="GET phase length")
    parser.add_argument("--working-set", type=size_arg, default="256MiB",
                        help="bytes written per system and size (default 256MiB)")
    parser.add_argument("--batch-bytes", type=size_arg, default="16MiB",
                        help="bytes per batched request (default 16MiB)")
    parser.add_argument("--rounds", type=positive_int_arg, default=3,
                        help="interleaved GET rounds per system (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``kvmesh bench store``."""
    import uvloop

    from kvmesh.common.procs import RedisServer
    from kvmesh.store.process import StoreProcess

    try:
        cfg = BenchConfig(tuple(args.value_size), args.clients, args.duration,
                          args.working_set, args.batch_bytes, args.rounds)
    except ValueError as exc:
        raise SystemExit(f"kvmesh bench store: error: {exc}") from None
    with ExitStack() as stack:
        store_url, redis_url = args.url, args.compare
        if args.spawn or store_url is None:
            # kvmesh and kvmesh_shm each hold one working set at a time.
            memory = format_size(2 * cfg.working_set_bytes + 4 * max(cfg.value_sizes))
            store = StoreProcess(memory_size=memory, extra_args=["--prefault"]).start()
            stack.callback(store.close)
            store_url = store.url
        if args.spawn or redis_url == "redis":
            redis = RedisServer().start()
            stack.callback(redis.close)
            redis_url = redis.url
        results = uvloop.run(run_bench(store_url, redis_url, cfg))
    print(json.dumps(results, indent=2) if args.json else markdown(results))
    return 0
