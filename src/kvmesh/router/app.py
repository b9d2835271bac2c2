"""The router's lifespan: discovery, health checks, KV event subscriber, metrics, HTTP server.

Routes (everything else: 404 error JSON; a known path with another method: 405)::

    POST /v1/completions        proxied (Proxy)
    POST /v1/chat/completions   proxied (Proxy)
    GET  /v1/models             union of the backends' model lists
    GET  /health                200 while at least one endpoint is available, else 503
    GET  /metrics               Prometheus text format
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kvmesh.common.errors import KvmeshError
from kvmesh.common.hashing import KEY_VERSION
from kvmesh.common.kv_event_bus import KVEventSubscriber
from kvmesh.common.kv_events import KVEventBatch
from kvmesh.common.openai_protocol import NOT_FOUND, UNAVAILABLE, error_body
from kvmesh.router.config import RouterConfig, normalize_backend_url
from kvmesh.router.discovery.base import Discovery, create_discovery
from kvmesh.router.endpoints import Endpoint, EndpointRegistry
from kvmesh.router.health import HealthChecker
from kvmesh.router.http_server import ClientConnection, HttpRequest, start_server
from kvmesh.router.kv_index import KVIndex
from kvmesh.router.metrics import RouterMetrics
from kvmesh.router.policies.base import PolicyDeps, create_policy
from kvmesh.router.proxy import Proxy
from kvmesh.router.routing_text import ModelRenderer
from kvmesh.router.upstream import UpstreamPool

log = logging.getLogger(__name__)

Route = Callable[[HttpRequest, ClientConnection], None]


class RouterApp:
    """One router process's long-lived state. ``start()`` then ``stop()``."""

    def __init__(self, config: RouterConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.prom = registry if registry is not None else CollectorRegistry()
        self.metrics = RouterMetrics(self.prom, config.strategy)
        self.endpoints = EndpointRegistry(breaker_failures=config.breaker_failures,
                                          breaker_cooldown_s=config.breaker_cooldown_s)
        self.kv_index = KVIndex(config.kv_index_max_entries)
        renderer = (ModelRenderer.load(config.model_dir, config.token_cache_max_bytes)
                    if config.model_dir else None)
        self.policy = create_policy(config.strategy, config, PolicyDeps(self.kv_index, renderer))
        self.metrics.watch_structures(self.prom, self.policy.structure_sizes)
        self.subscriber = KVEventSubscriber(self.on_kv_batch, on_error=self._on_kv_error,
                                            on_gap=self._on_kv_gap)
        self.endpoints.subscribe(self._on_membership)
        self.port = 0
        self._mismatch_logged: set[tuple[str, str]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self.pool: UpstreamPool | None = None
        self.health: HealthChecker | None = None
        self.proxy: Proxy | None = None
        self.discovery: Discovery = create_discovery(config, self.endpoints)
        self.routes: dict[tuple[str, str], Route] = {}

    async def start(self) -> int:
        """Discover, probe once, listen; returns the bound port."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        self.pool = UpstreamPool(loop, connect_timeout_s=cfg.connect_timeout_s,
                                 read_timeout_s=cfg.read_timeout_s)
        self.health = HealthChecker(self.endpoints, self.pool, interval_s=cfg.health_interval_s,
                                    timeout_s=cfg.connect_timeout_s + min(cfg.read_timeout_s, 5.0))
        self.proxy = Proxy(registry=self.endpoints, pool=self.pool, policy=self.policy,
                           metrics=self.metrics, known_models=self.health.known_models,
                           max_body_bytes=cfg.max_body_bytes, load_smoothing_s=cfg.load_smoothing_s)
        self.routes = {
            ("POST", "/v1/completions"): self.proxy.handle,
            ("POST", "/v1/chat/completions"): self.proxy.handle,
            ("GET", "/v1/models"): self._models,
            ("GET", "/health"): self._health,
            ("GET", "/metrics"): self._metrics,
        }
        await self.discovery.start()
        await self.health.check_all()
        self._server = await start_server(self.handle, cfg.host, cfg.port, max_body_bytes=cfg.max_body_bytes)
        self.port = self._server.sockets[0].getsockname()[1]
        for coro in (self.discovery.run(), self.health.run(), self.subscriber.run()):
            self._tasks.append(loop.create_task(coro))
        return self.port

    async def stop(self) -> None:
        """Stop serving and release every socket."""
        if self._server is not None:
            self._server.close()
        self.subscriber.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.pool is not None:
            self.pool.close()

    # -- HTTP ------------------------------------------------------------------
    def handle(self, request: HttpRequest, conn: ClientConnection) -> None:
        route = self.routes.get((request.method, request.path))
        if route is not None:
            route(request, conn)
        elif any(path == request.path for _, path in self.routes):
            conn.respond(405, error_body(f"method {request.method} not allowed on {request.path}",
                                         code="method_not_allowed"))
        else:
            conn.respond(404, error_body(f"no route {request.path}", type_=NOT_FOUND, code="not_found"))

    def _models(self, request: HttpRequest, conn: ClientConnection) -> None:
        assert self.health is not None
        conn.respond(200, orjson.dumps(self.health.models_union()))

    def _health(self, request: HttpRequest, conn: ClientConnection) -> None:
        available = len(self.endpoints.available())
        if available:
            conn.respond(200, orjson.dumps({"status": "ok", "endpoints_available": available}))
        else:
            conn.respond(503, error_body("no backend is available", type_=UNAVAILABLE, code="no_backend"))

    def _metrics(self, request: HttpRequest, conn: ClientConnection) -> None:
        for ep in self.endpoints.all():
            self.metrics.endpoint_healthy.labels(ep.url).set(1 if ep.healthy else 0)
        conn.respond(200, generate_latest(self.prom), content_type=CONTENT_TYPE_LATEST.encode())

    # -- membership and KV events ---------------------------------------------
    def _on_membership(self, added: list[Endpoint], removed: list[Endpoint]) -> None:
        for ep in removed:
            if ep.events_endpoint:
                self.subscriber.disconnect(ep.events_endpoint)
            self.subscriber.forget_source(ep.url)
            if self.pool is not None:
                self.pool.drop_endpoint(ep.url)
            with contextlib.suppress(KeyError):  # never labelled if /metrics was not scraped
                self.metrics.endpoint_healthy.remove(ep.url)
        for ep in added:
            if ep.events_endpoint:
                self.subscriber.connect(ep.events_endpoint)
        self.policy.on_endpoints_changed(added, removed)

    def on_kv_batch(self, batch: KVEventBatch) -> None:
        """Apply a worker's batch unless it was hashed differently (then say so, loudly)."""
        reason = None
        if batch.key_version != KEY_VERSION:
            reason = "key_version"
        elif batch.chunk_size != self.config.chunk_size:
            reason = "chunk_size"
        elif self.config.model_id and batch.model_id != self.config.model_id:
            reason = "model_id"
        if reason is not None:
            self.metrics.kv_event_mismatch.labels(reason).inc()
            if (batch.source, reason) not in self._mismatch_logged:
                self._mismatch_logged.add((batch.source, reason))
                log.error("KV events from %s ignored: %s differs (worker: key v%d, chunk %d, model %s; "
                          "router: key v%d, chunk %d)", batch.source, reason, batch.key_version,
                          batch.chunk_size, batch.model_id, KEY_VERSION, self.config.chunk_size)
            return
        try:
            batch.source = normalize_backend_url(batch.source)
        except ValueError:
            pass
        self.kv_index.apply(batch)
        self.metrics.kv_events.inc()

    def _on_kv_gap(self, source: str, expected: int, got: int) -> None:
        # Lost batches may have carried evictions: forget the worker and rebuild from here.
        with contextlib.suppress(ValueError):
            source = normalize_backend_url(source)
        log.warning("KV event gap from %s (expected seq %d, got %d): dropping its entries",
                    source, expected, got)
        self.metrics.kv_event_gaps.inc()
        self.kv_index.clear_source(source)

    def _on_kv_error(self, exc: Exception) -> None:
        self.metrics.kv_event_errors.inc()
        if isinstance(exc, KvmeshError):
            log.error("bad KV event message: %s", exc)
