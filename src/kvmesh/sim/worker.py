"""Assemble and serve simulated workers: engine, offload tiers, KV events, HTTP API.

Several replicas can share one process and one event loop (``--replicas``):
each gets its own port, engine, cache, metrics registry and event publisher,
so to a router they are independent workers, but 64 of them cost one Python
interpreter instead of 64 on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from kvmesh.common.hashing import KVLayout
from kvmesh.common.kv_events import KVEvent
from kvmesh.sim.config import SimConfig
from kvmesh.sim.engine import SimEngine
from kvmesh.sim.metrics import SimMetrics
from kvmesh.sim.offload import NoOffload, OffloadTiers, TieredOffload
from kvmesh.sim.server import SimApi
from kvmesh.sim.tokenizer import load_chat_template, load_tokenizer

log = logging.getLogger(__name__)

SIM_KV_LAYOUT = KVLayout(kv_dtype="float16", num_layers=1, num_kv_heads=1, head_dim=1, layout_tag="kvmesh-sim")
"""Layout of the placeholder chunks: 2 x chunk_size float16 (1 KiB per 256-token chunk).
Shared by every sim worker; its storage keys never collide with a real engine's."""


def placeholder_l1_bytes(config: SimConfig, header_bytes: int) -> int:
    """The L1 budget in placeholder bytes that holds as many chunks as ``l1_size_bytes`` of real KV."""
    real_chunk_bytes = config.preset.kv_bytes_per_token * config.chunk_size
    chunks = config.l1_size_bytes // real_chunk_bytes
    if config.l1_size_bytes and not chunks:
        chunks = 1  # a tiny budget still holds one chunk rather than silently none
    return chunks * (header_bytes + 2 * config.chunk_size * 2)


def make_offload(config: SimConfig, registry: CollectorRegistry,
                 on_events: Callable[[Sequence[KVEvent]], None] | None) -> OffloadTiers:
    """The L1/L2 tiers of ``config`` through the real cache library, or none."""
    if config.l1_size_bytes == 0 and config.l2_url is None:
        return NoOffload()
    import numpy as np

    from kvmesh.kvcache.chunk import KVChunk
    from kvmesh.kvcache.config import CacheConfig
    from kvmesh.kvcache.serde import HEADER_SIZE
    from kvmesh.kvcache.tiered import TieredKVCache

    cache_config = CacheConfig(l1_size_bytes=placeholder_l1_bytes(config, HEADER_SIZE),
                               l2_url=config.l2_url, chunk_size=config.chunk_size)
    on_event = (lambda event: on_events([event])) if on_events is not None else None
    cache = TieredKVCache(cache_config, config.chain_spec, SIM_KV_LAYOUT, registry=registry, on_event=on_event)
    placeholder = KVChunk.from_array(np.zeros((2, config.chunk_size), dtype=np.float16))
    return TieredOffload(cache, placeholder)


def make_publisher(config: SimConfig) -> tuple[Callable[[Sequence[KVEvent]], None] | None, Callable[[], None]]:
    """``(publish, close)`` for the configured KV event endpoint, or ``(None, no-op)``."""
    if not config.kv_events_endpoint:
        return None, lambda: None
    from kvmesh.common.kv_event_bus import KVEventPublisher

    pub = KVEventPublisher(config.kv_events_endpoint, source=config.source_url,
                           model_id=config.model_id, chunk_size=config.chunk_size)
    return pub.publish, pub.close


@dataclass
class SimWorker:
    """One simulated worker: build with :meth:`start`, stop with :meth:`stop`."""

    config: SimConfig
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    engine: SimEngine | None = field(default=None, init=False)
    port: int = field(default=0, init=False)
    """The bound port (differs from ``config.port`` when that was 0)."""
    _runner: web.AppRunner | None = field(default=None, init=False)
    _close_publisher: Callable[[], None] = field(default=lambda: None, init=False)

    async def start(self) -> SimWorker:
        publish, self._close_publisher = make_publisher(self.config)
        metrics = SimMetrics(self.registry, self.config.model_id)
        offload = make_offload(self.config, self.registry, publish)
        self.engine = SimEngine(self.config, metrics, offload=offload, on_events=publish)
        self.engine.start()
        api = SimApi(self.engine, load_tokenizer(self.config.model_dir), load_chat_template(self.config.model_dir))
        self._runner = web.AppRunner(api.build_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.engine is not None:
            await self.engine.stop()
            self.engine = None
        self._close_publisher()


async def serve_forever(configs: Sequence[SimConfig], on_ready: Callable[[list[SimWorker]], None]) -> None:
    """Start every worker, call ``on_ready``, and run until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    workers: list[SimWorker] = []
    try:
        for config in configs:
            workers.append(await SimWorker(config).start())
        on_ready(workers)
        await stop.wait()
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.stop()
