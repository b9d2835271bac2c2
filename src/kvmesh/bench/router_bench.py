"""``kvmesh bench router``: the router's overhead and routing quality against local fake backends.

Processes (2 cores shared by all, so the numbers are conservative)::

    this process (load client, uvloop) ──> router process ──> 3 fake backend processes
                   └──────────────── direct (baseline) ─────────┘

Measured, each against its baseline in the same run:
- added p50/p99 latency at concurrency 1 (router vs direct to a backend);
- router CPU time per request (``/proc/<router>/stat`` utime+stime over the c=32 phase);
- requests/s at concurrency 32 (router and direct);
- streaming TTFT overhead (time to the first body byte, router vs direct);
- stickiness and balance on two workloads, the strategy under test vs
  ``roundrobin``: growing multi-turn conversations sent sequentially, and 100
  concurrent conversations sharing one system prompt over 3 backends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import httptools

from kvmesh.common.cli_args import positive_int_arg
from kvmesh.common.procs import ManagedProcess, find_free_port, http_ready, wait_until

MODEL = "fake"
SYSTEM_PROMPT = "You are a meticulous assistant. " * 60  # ~2 KB shared by every conversation


@dataclass(frozen=True)
class RouterBenchConfig:
    """What one run measures."""

    requests: int = 2000
    """Requests per latency/throughput phase."""
    concurrency: int = 32
    """Clients in the throughput phase."""
    backends: int = 3
    """Fake backends."""
    strategy: str = "prefixaware"
    """Strategy under test (the stickiness baseline is always roundrobin)."""
    conversations: int = 20
    """Conversations of the sequential multi-turn workload."""
    turns: int = 6
    """Turns per conversation (both workloads)."""
    shared_conversations: int = 100
    """Concurrent conversations of the shared-system-prompt workload."""
    delay_ms: float = 20.0
    """Simulated backend time per turn in the conversation workloads."""

    def __post_init__(self) -> None:
        for name in ("requests", "concurrency", "backends", "conversations", "turns", "shared_conversations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {self.delay_ms}")


# ---- a minimal keep-alive HTTP client (so the client is not the bottleneck) ----


class _ClientConn(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.fut: asyncio.Future[tuple[bytes, float]] | None = None
        self.parts: list[bytes] = []
        self.t_first = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        import socket

        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("connection lost"))

    def on_body(self, body: bytes) -> None:
        if not self.parts:
            self.t_first = time.perf_counter()
        self.parts.append(body)

    def on_message_complete(self) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_result((b"".join(self.parts), self.t_first))

    async def request(self, data: bytes) -> tuple[bytes, float]:
        """Send one request; (body, perf_counter of the first body byte)."""
        self.parts = []
        self.parser = httptools.HttpResponseParser(self)
        self.fut = self.loop.create_future()
        assert self.transport is not None
        self.transport.write(data)
        return await self.fut


async def _connect(port: int) -> _ClientConn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: _ClientConn(loop), "127.0.0.1", port)
    return conn


def _post(path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def _served_by(body: bytes) -> str:
    return json.loads(body.split(b"\n")[0].removeprefix(b"data: "))["system_fingerprint"]


# ---- processes ---------------------------------------------------------------


@contextmanager
def _fleet(num: int) -> Iterator[list[int]]:
    procs, ports = [], []
    try:
        for i in range(num):
            port = find_free_port()
            procs.append(ManagedProcess([sys.executable, "-m", "kvmesh.router.fake_backend", "--port",
                                         str(port), "--name", f"b{i}", "--model", MODEL], f"fake-b{i}").start())
            ports.append(port)
        for port, proc in zip(ports, procs):
            wait_until(lambda p=port: http_ready(f"http://127.0.0.1:{p}/health"), 30, "fake backend",
                       alive=proc.alive)
        yield ports
    finally:
        for proc in procs:
            proc.stop()


@contextmanager
def _router(backend_ports: list[int], strategy: str) -> Iterator[tuple[int, ManagedProcess]]:
    port = find_free_port()
    argv = [sys.executable, "-m", "kvmesh", "router", "--port", str(port), "--routing-strategy", strategy,
            "--health-interval", "30s", "--log-level", "WARNING"]
    for p in backend_ports:
        argv += ["--backend", f"http://127.0.0.1:{p}"]
    proc = ManagedProcess(argv, "router").start()
    try:
        wait_until(lambda: http_ready(f"http://127.0.0.1:{port}/health"), 30, "router", alive=proc.alive)
        yield port, proc
    finally:
        proc.stop()


def _cpu_s(pid: int) -> float:
    """CPU time of a process (all threads), in seconds.

    Read from ``/proc/<pid>/task/*/schedstat`` (nanoseconds on CPU) where the
    kernel has it: utime+stime in ``/proc/<pid>/stat`` count 10 ms clock ticks,
    too coarse for a router that spends well under a millisecond per request.
    """
    try:
        total_ns = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total_ns += int(f.read().split()[0])
        return total_ns / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- phases --------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _latencies(port: int, n: int, stream: bool) -> list[float]:
    """Sequential requests; total latency, or time to first byte when streaming."""
    conn = await _connect(port)
    out = []
    for i in range(n):
        req = _post("/v1/completions", {"model": MODEL, "prompt": f"request {i} " * 8, "max_tokens": 4,
                                        "stream": stream})
        t0 = time.perf_counter()
        _, t_first = await conn.request(req)
        out.append((t_first if stream else time.perf_counter()) - t0)
    conn.transport.close()  # type: ignore[union-attr]
    return out


async def _throughput(port: int, n: int, concurrency: int) -> float:
    """Requests per second with ``concurrency`` keep-alive clients."""
    per_client = max(1, n // concurrency)

    async def client(c: int) -> None:
        conn = await _connect(port)
        for i in range(per_client):
            await conn.request(_post("/v1/completions", {"model": MODEL, "prompt": f"c{c} r{i} hello"}))
        conn.transport.close()  # type: ignore[union-attr]

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    return per_client * concurrency / (time.perf_counter() - t0)


def _chat(history: list[dict[str, str]], delay_ms: float) -> bytes:
    return _post("/v1/chat/completions", {"model": MODEL, "messages": history, "fake_delay_ms": delay_ms})


async def _conversation(conn: _ClientConn, cid: int, turns: int, delay_ms: float, served: list[str]) -> None:
    history = [{"role": "system", "content": SYSTEM_PROMPT}]
    for t in range(turns):
        history.append({"role": "user", "content": f"conversation {cid} question {t}: tell me more"})
        body, _ = await conn.request(_chat(history, delay_ms))
        served.append(_served_by(body))
        history.append({"role": "assistant", "content": f"answer {t} to conversation {cid} " * 5})


def _quality(per_conv: list[list[str]]) -> dict[str, float]:
    later = [(conv[t], conv[t - 1]) for conv in per_conv for t in range(1, len(conv))]
    sticky = sum(a == b for a, b in later) / max(1, len(later))
    counts = Counter(b for conv in per_conv for b in conv)
    mean = sum(counts.values()) / max(1, len(counts))
    return {"stickiness": sticky, "busiest_over_mean": max(counts.values()) / mean,
            "turns_per_backend": dict(sorted(counts.items()))}  # type: ignore[dict-item]


async def _sequential_workload(port: int, cfg: RouterBenchConfig) -> dict[str, float]:
    """Growing conversations, one request at a time, turns interleaved across conversations."""
    conn = await _connect(port)
    per_conv: list[list[str]] = [[] for _ in range(cfg.conversations)]
    histories = [[{"role": "system", "content": SYSTEM_PROMPT}] for _ in range(cfg.conversations)]
    for t in range(cfg.turns):
        for cid, history in enumerate(histories):
            history.append({"role": "user", "content": f"conversation {cid} question {t}"})
            body, _ = await conn.request(_chat(history, 0))
            per_conv[cid].append(_served_by(body))
            history.append({"role": "assistant", "content": f"answer {t} for {cid} " * 5})
    conn.transport.close()  # type: ignore[union-attr]
    return _quality(per_conv)


async def _shared_prompt_workload(port: int, cfg: RouterBenchConfig) -> dict[str, float]:
    """``shared_conversations`` concurrent conversations, same system prompt."""
    conns = [await _connect(port) for _ in range(cfg.shared_conversations)]
    per_conv: list[list[str]] = [[] for _ in conns]
    await asyncio.gather(*(_conversation(c, i, cfg.turns, cfg.delay_ms, per_conv[i]) for i, c in enumerate(conns)))
    for c in conns:
        c.transport.close()  # type: ignore[union-attr]
    return _quality(per_conv)


@dataclass
class RouterBenchResult:
    config: dict[str, Any]
    latency_ms: dict[str, float] = field(default_factory=dict)
    router_cpu_ms_per_request: float = 0.0
    rps: dict[str, float] = field(default_factory=dict)
    stream_ttft_ms: dict[str, float] = field(default_factory=dict)
    workloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_avg_1m_at_start: float = 0.0


async def _overhead(cfg: RouterBenchConfig, ports: list[int], rport: int, rproc: ManagedProcess,
                    res: RouterBenchResult) -> None:
    await _latencies(rport, min(200, cfg.requests), False)  # warm-up: connections, caches
    direct = await _latencies(ports[0], cfg.requests, False)
    routed = await _latencies(rport, cfg.requests, False)
    res.latency_ms = {"direct_p50": _pct(direct, 0.5) * 1e3, "direct_p99": _pct(direct, 0.99) * 1e3,
                      "router_p50": _pct(routed, 0.5) * 1e3, "router_p99": _pct(routed, 0.99) * 1e3}
    res.latency_ms["added_p50"] = res.latency_ms["router_p50"] - res.latency_ms["direct_p50"]
    res.latency_ms["added_p99"] = res.latency_ms["router_p99"] - res.latency_ms["direct_p99"]
    res.rps["direct_c%d" % cfg.concurrency] = await _throughput(ports[0], cfg.requests, cfg.concurrency)
    assert rproc.proc is not None
    cpu0 = _cpu_s(rproc.proc.pid)
    n = max(1, cfg.requests // cfg.concurrency) * cfg.concurrency
    res.rps["router_c%d" % cfg.concurrency] = await _throughput(rport, cfg.requests, cfg.concurrency)
    res.router_cpu_ms_per_request = (_cpu_s(rproc.proc.pid) - cpu0) / n * 1e3
    sd = await _latencies(ports[0], cfg.requests // 2, True)
    sr = await _latencies(rport, cfg.requests // 2, True)
    res.stream_ttft_ms = {"direct_p50": _pct(sd, 0.5) * 1e3, "router_p50": _pct(sr, 0.5) * 1e3,
                          "added_p50": (statistics.median(sr) - statistics.median(sd)) * 1e3}


async def run_bench(cfg: RouterBenchConfig) -> RouterBenchResult:
    # The 1-minute load average is recorded because these machines are shared:
    # latency numbers are only comparable between runs at similar load.
    res = RouterBenchResult(config=asdict(cfg), load_avg_1m_at_start=os.getloadavg()[0])
    with _fleet(cfg.backends) as ports:
        with _router(ports, cfg.strategy) as (rport, rproc):
            await _overhead(cfg, ports, rport, rproc, res)
        for strategy in dict.fromkeys([cfg.strategy, "roundrobin"]):
            with _router(ports, strategy) as (rport, _):
                res.workloads[f"multiturn_sequential/{strategy}"] = await _sequential_workload(rport, cfg)
            with _router(ports, strategy) as (rport, _):
                res.workloads[f"shared_prompt_concurrent/{strategy}"] = await _shared_prompt_workload(rport, cfg)
    return res


def to_markdown(res: RouterBenchResult) -> str:
    lat, st = res.latency_ms, res.stream_ttft_ms
    c = res.config["concurrency"]
    lines = [
        f"### kvmesh bench router ({res.config['strategy']}, {res.config['backends']} fake backends, "
        f"load average {res.load_avg_1m_at_start:.1f} at start)", "",
        "| metric | router | direct | added | goal |", "|---|---|---|---|---|",
        f"| latency p50 (ms) | {lat['router_p50']:.3f} | {lat['direct_p50']:.3f} | {lat['added_p50']:.3f} | ≤ 0.3 |",
        f"| latency p99 (ms) | {lat['router_p99']:.3f} | {lat['direct_p99']:.3f} | {lat['added_p99']:.3f} | |",
        f"| streaming TTFT p50 (ms) | {st['router_p50']:.3f} | {st['direct_p50']:.3f} | {st['added_p50']:.3f} | ≤ 0.5 |",
        f"| req/s at c={c} | {res.rps[f'router_c{c}']:.0f} | {res.rps[f'direct_c{c}']:.0f} | | |",
        f"| router CPU per request (ms) | {res.router_cpu_ms_per_request:.3f} | | | ≤ 0.2 |", "",
        "| workload / strategy | later turns on same backend | busiest ÷ mean | turns per backend |",
        "|---|---|---|---|",
    ]
    for name, q in res.workloads.items():
        lines.append(f"| {name} | {q['stickiness'] * 100:.1f} % | {q['busiest_over_mean']:.2f} | "
                     f"{' / '.join(str(v) for v in q['turns_per_backend'].values())} |")
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("router", help="router overhead, stickiness and balance vs direct/roundrobin")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--requests", type=positive_int_arg, default=2000)
    p.add_argument("--concurrency", type=positive_int_arg, default=32)
    p.add_argument("--turns", type=positive_int_arg, default=6)
    p.add_argument("--conversations", type=positive_int_arg, default=20)
    p.add_argument("--shared-conversations", type=positive_int_arg, default=100)
    p.add_argument("--strategy", choices=["prefixaware", "roundrobin"], default="prefixaware")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    import uvloop

    cfg = RouterBenchConfig(requests=args.requests, concurrency=args.concurrency, turns=args.turns,
                            conversations=args.conversations, shared_conversations=args.shared_conversations,
                            strategy=args.strategy)
    res = uvloop.run(run_bench(cfg))
    print(json.dumps(asdict(res), indent=2) if args.json else to_markdown(res))
    return 0
