"""Active health checks: every interval, ``GET /health`` and ``GET /v1/models`` on every endpoint.

A failed or late check opens the endpoint's breaker at once; a passing check
after the breaker's cooldown re-admits it. ``/v1/models`` answers feed model
validation and the router's own ``/v1/models`` (the union across backends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from kvmesh.common.errors import TransportError
from kvmesh.router.endpoints import Endpoint, EndpointRegistry
from kvmesh.router.upstream import UpstreamPool, simple_get

log = logging.getLogger(__name__)


class HealthChecker:
    """Probes endpoints and keeps their model lists."""

    def __init__(self, registry: EndpointRegistry, pool: UpstreamPool, *, interval_s: float,
                 timeout_s: float) -> None:
        self.registry = registry
        self.pool = pool
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.model_cards: dict[str, list[dict[str, Any]]] = {}
        """Endpoint URL -> the model objects of its last /v1/models answer."""
        self.rounds = 0
        """Completed check rounds (tests poll on it)."""

    async def run(self) -> None:
        """Check forever, one round per interval."""
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval_s)  # the period, not a readiness wait

    async def check_all(self) -> None:
        endpoints = self.registry.all()
        await asyncio.gather(*(self.check(ep) for ep in endpoints))
        known = {ep.url for ep in self.registry.all()}
        for url in list(self.model_cards):
            if url not in known:
                del self.model_cards[url]
        self.rounds += 1

    async def check(self, ep: Endpoint) -> bool:
        """Probe one endpoint; returns whether it passed."""
        try:
            status, _ = await asyncio.wait_for(simple_get(self.pool, ep, "/health"), self.timeout_s)
            if status != 200:
                raise TransportError(f"/health answered {status}")
            status, body = await asyncio.wait_for(simple_get(self.pool, ep, "/v1/models"), self.timeout_s)
        except (TransportError, asyncio.TimeoutError) as exc:
            if ep.healthy:
                log.warning("endpoint %s failed its health check: %s", ep.url, exc or "timeout")
            self.registry.mark_down(ep)
            return False
        if status == 200:
            self._update_models(ep, body)
        self.registry.record_success(ep)
        return True

    def _update_models(self, ep: Endpoint, body: bytes) -> None:
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
            cards = [c for c in orjson.loads(body).get("data", []) if isinstance(c, dict) and "id" in c]
            self.model_cards[ep.url] = cards
            ep.models = frozenset(str(c["id"]) for c in cards)

    def known_models(self) -> set[str]:
        """Every model id some endpoint reported."""
        out: set[str] = set()
        for cards in self.model_cards.values():
            out.update(str(c["id"]) for c in cards)
        return out

    def models_union(self) -> dict[str, Any]:
        """The router's /v1/models body: each model once, in id order."""
        seen: dict[str, dict[str, Any]] = {}
        for url in sorted(self.model_cards):
            for card in self.model_cards[url]:
                seen.setdefault(str(card["id"]), card)
        return {"object": "list", "data": [seen[k] for k in sorted(seen)]}
