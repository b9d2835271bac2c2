"""The simulated engine: a continuous-batching scheduler that sleeps instead of computing.

One asyncio task runs engine *steps*, like vLLM's V1 scheduler with chunked
prefill. Each step:

1. admits waiting requests (FIFO) while fewer than ``max_batch`` run; each new
   request looks up its prefix in the engine cache, then in the offload tiers,
   and pays the restore time of what L1/L2 held; a step that admits anything
   pays the preset's fixed request overhead once;
2. spends up to ``max_prefill_tokens_per_step`` prompt tokens on prefill,
   oldest request first, costed by :class:`CostModel` (only uncached tokens);
3. runs one decode step for every sequence already past prefill;
4. sleeps for the step's total cost, then hands out tokens: the first token to
   requests whose prefill finished, the next token to each decoding one.

A request's KV enters the engine cache when its prefill finishes; the KV events
(ENGINE tier) and the offload write happen at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from kvmesh.common.hashing import NO_EXTRAS, RequestExtras, prefix_hashes
from kvmesh.common.kv_events import KVEvent, Tier, admitted, evicted
from kvmesh.sim.config import SimConfig
from kvmesh.sim.cost_model import CostModel
from kvmesh.sim.metrics import SimMetrics
from kvmesh.sim.offload import EventCallback, NoOffload, OffloadTiers
from kvmesh.sim.prefix_cache import EnginePrefixCache

log = logging.getLogger(__name__)

DONE = -1
"""Sentinel put on a request's token queue after its last token."""


@dataclass(eq=False)
class SimRequest:
    """One generation request inside the engine."""

    prompt_tokens: Sequence[int]
    max_tokens: int
    extras: RequestExtras = NO_EXTRAS
    tokens: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    """Receives 0, 1, ... for each generated token, then :data:`DONE`."""
    arrival_s: float = field(default_factory=time.monotonic)
    cached_tokens: int = 0
    """Prompt tokens whose KV was reused (engine cache or offload)."""
    prefill_pos: int = 0
    generated: int = 0
    cancelled: bool = False
    _chunk_hashes: list[bytes] = field(default_factory=list)
    _block_hashes: list[bytes] = field(default_factory=list)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_tokens)

    @property
    def prefilling(self) -> bool:
        return self.prefill_pos < self.prompt_len


class SimEngine:
    """Schedules :class:`SimRequest` objects under a cost model."""

    def __init__(
        self,
        config: SimConfig,
        metrics: SimMetrics,
        *,
        offload: OffloadTiers | None = None,
        on_events: EventCallback | None = None,
    ) -> None:
        self.config = config
        self.cost = CostModel(config.preset)
        self.cache = EnginePrefixCache(config.preset.kv_capacity_tokens, config.block_size, config.chunk_size)
        self.metrics = metrics
        self.offload = offload or NoOffload()
        self._on_events = on_events
        self._waiting: deque[SimRequest] = deque()
        self._running: list[SimRequest] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        """Start the step loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="sim-engine")

    async def stop(self) -> None:
        """Stop the loop, end every request, and close the offload tiers."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for req in [*self._waiting, *self._running]:
            req.tokens.put_nowait(DONE)
        self._waiting.clear()
        self._running.clear()
        await self.offload.close()

    def submit(self, req: SimRequest) -> None:
        """Queue a request; its tokens arrive on ``req.tokens``."""
        if req.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {req.max_tokens}")
        self._waiting.append(req)
        self.metrics.prompt_tokens.inc(req.prompt_len)
        self._update_gauges()
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            if not self._waiting and not self._running:
                self._wake.clear()
                await self._wake.wait()
            try:
                step_s = await self._admit()
                step_s += self._plan_prefill()
                decoding = [r for r in self._running if not r.prefilling and r.generated > 0]
                if decoding:
                    step_s += self.cost.decode_step_s(len(decoding))
                await asyncio.sleep(step_s)
                self._finish_step(decoding)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep serving: one bad request must not stop the engine
                log.exception("sim engine step failed")

    async def _admit(self) -> float:
        """Move waiting requests into the batch; returns their overhead + restore seconds."""
        cost = 0.0
        admitted_any = False
        max_batch = self.config.preset.max_batch
        while self._waiting and len(self._running) < max_batch:
            req = self._waiting.popleft()
            if req.cancelled:
                continue
            try:
                cost += await self._reuse(req)
            except Exception:  # this request only: end it, keep serving the others
                log.exception("sim engine could not admit a request")
                req.tokens.put_nowait(DONE)
                self.metrics.requests.labels(status="failed").inc()
                continue
            self._running.append(req)
            admitted_any = True
        self._update_gauges()
        # The fixed admission cost is paid once per step that admits anything:
        # requests arriving together are scheduled and run through the first
        # forward pass as one batch, not one after another.
        return cost + (self.cost.overhead_s if admitted_any else 0.0)

    async def _reuse(self, req: SimRequest) -> float:
        """Find the request's cached prefix; returns the time to restore offloaded KV."""
        cfg = self.config
        req._block_hashes = prefix_hashes(req.prompt_tokens, cfg.block_spec, req.extras)
        req._chunk_hashes = prefix_hashes(req.prompt_tokens, cfg.chain_spec, req.extras)
        engine_tokens = self.cache.match(req._block_hashes) * cfg.block_size
        # vLLM always recomputes the last prompt token to get logits for the first output.
        limit = max(req.prompt_len - 1, 0)
        engine_tokens = min(engine_tokens, limit)
        hit = await self.offload.restore(req._chunk_hashes)
        offload_tokens = min(hit.total_chunks * cfg.chunk_size, limit)
        load_s = 0.0
        req.cached_tokens = engine_tokens
        if offload_tokens > engine_tokens:
            # Restore only what the engine lacks; L1 chunks come first in the prefix.
            l1_end = min(hit.l1_chunks * cfg.chunk_size, offload_tokens)
            l1_tokens = max(l1_end - engine_tokens, 0)
            l2_tokens = offload_tokens - max(l1_end, engine_tokens)
            restore_s = self.cost.load_s(l1_tokens, l2_tokens)
            # Never slower than recompute: a restore that costs more than computing
            # the same tokens is skipped, as the connector does.
            if restore_s < self.cost.prefill_s(engine_tokens, offload_tokens):
                load_s = restore_s
                req.cached_tokens = offload_tokens
                self.metrics.cached_tokens.labels(tier="l1").inc(l1_tokens)
                self.metrics.cached_tokens.labels(tier="l2").inc(l2_tokens)
        self.metrics.cached_tokens.labels(tier="engine").inc(engine_tokens)
        req.prefill_pos = req.cached_tokens
        return load_s

    def _plan_prefill(self) -> float:
        """Advance prefills within the step's token budget; returns their seconds."""
        budget = self.config.preset.max_prefill_tokens_per_step
        cost = 0.0
        for req in self._running:
            if budget <= 0:
                break
            if not req.prefilling:
                continue
            take = min(req.prompt_len - req.prefill_pos, budget)
            cost += self.cost.prefill_s(req.prefill_pos, req.prefill_pos + take)
            req.prefill_pos += take
            budget -= take
        return cost

    def _finish_step(self, decoding: list[SimRequest]) -> None:
        """Hand out this step's tokens and retire finished requests."""
        now = time.monotonic()
        decoding_set = set(decoding)
        for req in self._running:
            if req.cancelled:
                continue
            if req in decoding_set:
                self._emit(req)
            elif not req.prefilling and req.generated == 0:
                self._prefill_done(req)
                self.metrics.ttft_seconds.observe(now - req.arrival_s)
                self._emit(req)
        kept = []
        for req in self._running:
            if req.cancelled or req.generated >= req.max_tokens:
                req.tokens.put_nowait(DONE)
                self.metrics.requests.labels(status="cancelled" if req.cancelled else "ok").inc()
            else:
                kept.append(req)
        self._running = kept
        self._update_gauges()

    def _emit(self, req: SimRequest) -> None:
        req.tokens.put_nowait(req.generated)
        req.generated += 1
        self.metrics.generation_tokens.inc()

    def _prefill_done(self, req: SimRequest) -> None:
        change = self.cache.insert(req._block_hashes, req._chunk_hashes)
        events: list[KVEvent] = []
        if change.evicted:
            events.append(evicted(Tier.ENGINE, change.evicted))
        if change.admitted:
            events.append(admitted(Tier.ENGINE, change.admitted))
        if events and self._on_events is not None:
            self._on_events(events)
        self.offload.store(req._chunk_hashes)

    def _update_gauges(self) -> None:
        m = self.metrics
        m.num_running.set(len(self._running))
        m.num_waiting.set(len(self._waiting))
        m.cache_usage.set(len(self.cache) / self.cache.capacity_blocks)
