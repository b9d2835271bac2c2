"""Drive a workload against an OpenAI endpoint: closed-loop sessions, optional QPS cap.

``concurrency`` sessions each take the next conversation and replay its turns
in order (a turn starts after the previous one finished, like a user reading
the answer). ``qps`` additionally spaces request starts with seeded Poisson
gaps. The run stops issuing at ``num_requests`` requests or ``duration_s``
seconds, whichever comes first, and waits for requests in flight.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import numpy as np

from kvmesh.bench.client import chat_body, send_chat
from kvmesh.bench.stats import RequestRecord
from kvmesh.bench.workloads.base import Conversation, Workload


@dataclass(frozen=True)
class LoadConfig:
    """How hard and how long to drive the endpoint."""

    url: str
    """Base URL of the endpoint (router or worker), without ``/v1``."""
    model: str | None = None
    """Model name to request; None: ask ``/v1/models``."""
    concurrency: int = 8
    """Sessions running at once."""
    qps: float | None = None
    """Cap on request starts per second (Poisson); None: closed loop only."""
    num_requests: int | None = None
    """Stop issuing after this many requests."""
    duration_s: float | None = None
    """Stop issuing after this many seconds."""
    num_conversations: int | None = None
    """Start at most this many conversations (each is replayed to its end, budget permitting)."""
    seed: int = 0
    """Seeds the Poisson gaps (the workload has its own seed)."""
    request_timeout_s: float = 600.0
    """Whole-request deadline; a late request counts as failed."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.qps is not None and self.qps <= 0:
            raise ValueError(f"qps must be > 0, got {self.qps}")
        if self.num_requests is None and self.duration_s is None and self.num_conversations is None:
            raise ValueError("give num_requests, duration_s or num_conversations")
        if self.num_conversations is not None and self.num_conversations < 1:
            raise ValueError(f"num_conversations must be >= 1, got {self.num_conversations}")
        if self.num_requests is not None and self.num_requests < 1:
            raise ValueError(f"num_requests must be >= 1, got {self.num_requests}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")


class _Budget:
    """Shared request budget, pacing and progress of one run."""

    def __init__(self, config: LoadConfig, progress: object | None) -> None:
        self.config = config
        self.issued = 0
        self.conversations = 0
        self.deadline = time.monotonic() + config.duration_s if config.duration_s else None
        self._rng = np.random.default_rng([config.seed, 7])
        self._next_start = time.monotonic()
        self._lock = asyncio.Lock()
        self.progress = progress

    def exhausted(self) -> bool:
        cfg = self.config
        if cfg.num_requests is not None and self.issued >= cfg.num_requests:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def take_conversation(self) -> bool:
        """Claim one conversation; False when the conversation budget is spent."""
        limit = self.config.num_conversations
        if limit is not None and self.conversations >= limit:
            return False
        self.conversations += 1
        return True

    async def take(self) -> bool:
        """Claim one request slot (waiting for the QPS pace); False when the budget is spent."""
        async with self._lock:
            if self.exhausted():
                return False
            self.issued += 1
            if self.config.qps is not None:
                self._next_start = max(self._next_start, time.monotonic())
                wait_s = self._next_start - time.monotonic()
                self._next_start += float(self._rng.exponential(1.0 / self.config.qps))
                if wait_s > 0:
                    await asyncio.sleep(wait_s)  # pacing, not readiness
            return True


async def discover_model(session: aiohttp.ClientSession, url: str) -> str:
    """The first model ``url``/v1/models lists; ``ValueError`` if none."""
    async with session.get(f"{url}/v1/models") as resp:
        resp.raise_for_status()
        data = await resp.json()
    models = data.get("data") or []
    if not models:
        raise ValueError(f"{url}/v1/models lists no model")
    return str(models[0]["id"])


async def run_load(config: LoadConfig, workload: Workload, *, progress: bool = False) -> tuple[list[RequestRecord], float]:
    """Run the workload; returns every request's record and the wall time in seconds."""
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s, connect=10.0)
    connector = aiohttp.TCPConnector(limit=config.concurrency * 2, force_close=False)
    bar = _progress_bar(config, progress)
    records: list[RequestRecord] = []
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        model = config.model or await discover_model(session, config.url)
        budget = _Budget(config, bar)
        conversations = workload.conversations()
        started = time.monotonic()
        await asyncio.gather(*(
            _session_loop(session, config.url, model, conversations, budget, records)
            for _ in range(config.concurrency)
        ))
        wall_s = time.monotonic() - started
    if bar is not None:
        bar.close()
    return records, wall_s


async def _session_loop(session: aiohttp.ClientSession, url: str, model: str,
                        conversations: Iterator[Conversation], budget: _Budget,
                        records: list[RequestRecord]) -> None:
    while not budget.exhausted() and budget.take_conversation():
        conv = next(conversations, None)
        if conv is None:
            return
        for index, turn in enumerate(conv.turns):
            if not await budget.take():
                return
            record = RequestRecord(conv.conv_id, index, time.monotonic())
            body = chat_body(model, conv.messages(index), turn.max_tokens, conv.conv_id)
            records.append(await send_chat(session, url, body, record))
            if budget.progress is not None:
                budget.progress.update(1)  # type: ignore[attr-defined]


def _progress_bar(config: LoadConfig, enabled: bool) -> object | None:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=config.num_requests, unit="req", file=sys.stderr, dynamic_ncols=True, leave=False)
