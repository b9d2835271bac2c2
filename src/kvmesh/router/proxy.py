"""The request flow of the OpenAI routes: validate, route, forward, retry once.

::

    client ──POST──> validate body ──> policy.select ──> pool.acquire(endpoint)
                       │ 4xx error JSON                      │ connect error/timeout
                       v                                     v
                     client                       retry once on another endpoint
    backend ──status+headers──> client   (the first byte: no retry after this)
    backend ──body pieces──────> client   (as they arrive; chunked re-framed 1:1)
    backend breaks mid-stream ─> SSE error event + end of stream, or close

Only the proxy writes to the client, and it never names a backend address in
an error: backends are internal.

Two paths, same rules. When a keep-alive connection to the chosen endpoint is
idle, the request is written at once and the whole exchange completes on
parser callbacks (no task, no future awaited): this is what keeps the router's
CPU per request low. Otherwise, and after any failure before the first byte, a
task runs :meth:`Proxy._forward`, which connects, retries and answers errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson

from kvmesh.common.errors import BackendTimeoutError, TransportError
from kvmesh.common.openai_protocol import NOT_FOUND, SERVER_ERROR, UNAVAILABLE, error_body
from kvmesh.router.endpoints import Endpoint, EndpointRegistry
from kvmesh.router.exchange import SKIP_REQUEST_HEADERS, Exchange
from kvmesh.router.http_server import ClientConnection, HttpRequest
from kvmesh.router.metrics import RouterMetrics
from kvmesh.router.policies.base import RoutingPolicy, RoutingRequest
from kvmesh.router.routing_text import RequestShapeError
from kvmesh.router.upstream import UpstreamConnection, UpstreamPool


def _check_chat(body: dict[str, Any]) -> str | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    return None


def _check_completion(body: dict[str, Any]) -> str | None:
    return None if isinstance(body.get("prompt"), (str, list)) else "'prompt' must be a string or a list"


# Cheap shape checks every strategy runs, so that even roundrobin answers a
# malformed request itself instead of spending a backend on it.
_SHAPE_CHECKS = {"/v1/chat/completions": _check_chat, "/v1/completions": _check_completion}


class Proxy:
    """Handles ``POST /v1/completions`` and ``POST /v1/chat/completions``."""

    def __init__(self, *, registry: EndpointRegistry, pool: UpstreamPool, policy: RoutingPolicy,
                 metrics: RouterMetrics, known_models: Callable[[], set[str]], max_body_bytes: int,
                 load_smoothing_s: float = 0.0) -> None:
        self.registry = registry
        self.pool = pool
        self.policy = policy
        self.metrics = metrics
        self.known_models = known_models
        """Callable returning the set of model ids backends serve (empty: unknown yet)."""
        self.max_body_bytes = max_body_bytes
        self.load_smoothing_s = load_smoothing_s
        """Time constant of each endpoint's load average (see RouterConfig)."""
        self.loop = pool.loop
        self._tasks: set[asyncio.Task[None]] = set()

    def handle(self, request: HttpRequest, conn: ClientConnection) -> None:
        """Validate and route synchronously, then forward: on callbacks alone when a
        keep-alive connection is idle (the common case), else in a task."""
        parsed = self._validate(request, conn)
        if parsed is None:
            return
        body, model = parsed
        candidates = self._candidates(model)
        if not candidates:
            conn.respond(503, error_body("no backend is available for this model", type_=UNAVAILABLE,
                                         code="no_backend"))
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        rreq = RoutingRequest(request.path, body, headers)
        started = time.perf_counter()
        try:
            decision = self.policy.select(rreq, candidates)
        except RequestShapeError as exc:
            conn.respond(400, error_body(str(exc), code="invalid_request"))
            return
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        self.metrics.count_decision(decision.reason)
        # Count the request as in flight now, not when its task first runs: a
        # burst parsed in one read must see the loads its own decisions create.
        ep = decision.endpoint
        self._begin(ep)
        upstream = self.pool.idle(ep)
        if upstream is not None:
            self._send_fast(request, conn, rreq, model, ep, upstream)
        else:
            self._spawn(self._forward(request, conn, rreq, model, ep))

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send_fast(self, request: HttpRequest, conn: ClientConnection, rreq: RoutingRequest, model: str,
                   ep: Endpoint, upstream: UpstreamConnection) -> None:
        """The common case, without a task: a keep-alive connection is idle, so the whole
        exchange runs on callbacks. Only a failure before the first byte falls back to
        the task path (:meth:`_forward`), which owns the retry rules."""
        exchange = Exchange(self.loop, conn, upstream, self.loop.time())

        def finished(ex: Exchange) -> None:
            if ex.delivered:
                _, ttft, latency = self.metrics.for_endpoint(ep.url)
                self._finish(conn, ep, ex, ttft, latency)
                self._end(ep)
            elif self._is_stale(upstream, ex):
                self._spawn(self._forward(request, conn, rreq, model, ep))  # same endpoint, new socket
            else:
                self._count_failure(ep)
                self._end(ep)
                self._spawn(self._forward(request, conn, rreq, model, ep, first_error=ex.error))

        exchange.on_finished = finished
        upstream.send(self.upstream_request(request, ep), exchange)

    def _candidates(self, model: str) -> list[Endpoint]:
        """Healthy endpoints serving ``model``. If every breaker is open, all of them
        (panic mode): a wrong health signal must not black-hole the whole fleet."""
        healthy = [e for e in self.registry.available() if e.serves(model)]
        return healthy or [e for e in self.registry.all() if e.serves(model)]

    def _validate(self, request: HttpRequest, conn: ClientConnection) -> tuple[dict[str, Any], str] | None:
        if request.too_large:
            conn.respond(413, error_body(f"request body exceeds {self.max_body_bytes} bytes",
                                         code="request_too_large"))
            return None
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            conn.respond(400, error_body("request body is not valid JSON", code="invalid_json"))
            return None
        if not isinstance(body, dict):
            conn.respond(400, error_body("request body must be a JSON object", code="invalid_json"))
            return None
        model = body.get("model")
        if not isinstance(model, str) or not model:
            conn.respond(400, error_body("you must provide a model parameter", param="model",
                                         code="missing_model"))
            return None
        shape_error = _SHAPE_CHECKS[request.path](body)
        if shape_error is not None:
            conn.respond(400, error_body(shape_error, code="invalid_request"))
            return None
        known = self.known_models()
        if known and model not in known:
            conn.respond(404, error_body(f"the model {model!r} does not exist", type_=NOT_FOUND,
                                         param="model", code="model_not_found"))
            return None
        return body, model

    @staticmethod
    def upstream_request(request: HttpRequest, ep: Endpoint) -> bytes:
        """The request as sent to ``ep``: same path, headers and body bytes, new framing."""
        parts = [b"%s %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %d\r\n" % (
            request.method.encode(), request.path.encode(), ep.host.encode(), ep.port, len(request.body))]
        for name, value in request.headers:
            if name.lower() not in SKIP_REQUEST_HEADERS:
                parts.append(b"%s: %s\r\n" % (name, value))
        parts.append(b"\r\n")
        parts.append(request.body)
        return b"".join(parts)

    async def _forward(self, request: HttpRequest, conn: ClientConnection, rreq: RoutingRequest,
                       model: str, ep: Endpoint, first_error: TransportError | None = None) -> None:
        """Attempt ``ep`` (unless ``first_error`` says the fast path already failed on it),
        then at most one other endpoint; answer 502/504 if neither delivered."""
        tried: list[Endpoint] = []
        error: TransportError | None = None
        for attempt in range(2):
            if attempt == 0 and first_error is not None:
                delivered, error = False, first_error
            else:
                delivered, error = await self._attempt(request, conn, ep)
            if delivered:
                return
            tried.append(ep)
            rest = [e for e in self._candidates(model) if e not in tried]
            if attempt or not rest:
                break
            self.metrics.retries.inc()
            decision = self.policy.select(rreq, rest)
            self.metrics.count_decision(decision.reason)
            ep = decision.endpoint
            self._begin(ep)
        if isinstance(error, BackendTimeoutError):
            conn.respond(504, error_body("the backend timed out", type_=SERVER_ERROR, code="backend_timeout"))
        else:
            conn.respond(502, error_body("no backend could serve the request", type_=SERVER_ERROR,
                                         code="backend_unavailable"))

    async def _attempt(self, request: HttpRequest, conn: ClientConnection,
                       ep: Endpoint) -> tuple[bool, TransportError | None]:
        """One endpoint (already counted by :meth:`_begin`); (True, None) once bytes reached
        the client, else (False, why). Always ends the endpoint's in-flight count."""
        _, ttft, latency = self.metrics.for_endpoint(ep.url)
        start = self.loop.time()
        try:
            for _ in range(2):  # a second try only when a reused keep-alive socket was stale
                try:
                    upstream = await self.pool.acquire(ep)
                except TransportError as exc:
                    self.registry.record_failure(ep)
                    self.metrics.count_request(ep.url, "connect_error")
                    return False, exc
                exchange = Exchange(self.loop, conn, upstream, start)
                upstream.send(self.upstream_request(request, ep), exchange)
                if await exchange.first:
                    await exchange.done
                    self._finish(conn, ep, exchange, ttft, latency)
                    return True, None
                if not self._is_stale(upstream, exchange):
                    self._count_failure(ep)
                    return False, exchange.error
            return False, exchange.error
        finally:
            self._end(ep)

    @staticmethod
    def _is_stale(upstream: UpstreamConnection, exchange: Exchange) -> bool:
        """A reused keep-alive socket the backend had closed: not the backend's failure."""
        return (upstream.reused and not upstream.got_bytes
                and not isinstance(exchange.error, BackendTimeoutError))

    def _count_failure(self, ep: Endpoint) -> None:
        self.registry.record_failure(ep)
        self.metrics.count_request(ep.url, "error")

    def _begin(self, ep: Endpoint) -> None:
        ep.track(1, time.monotonic(), self.load_smoothing_s)
        self.metrics.for_endpoint(ep.url)[0].inc()

    def _end(self, ep: Endpoint) -> None:
        ep.track(-1, time.monotonic(), self.load_smoothing_s)
        self.metrics.for_endpoint(ep.url)[0].dec()

    def _finish(self, conn: ClientConnection, ep: Endpoint, exchange: Exchange, ttft: Any,
                latency: Any) -> None:
        if exchange.ttft_s is not None:
            ttft.observe(exchange.ttft_s)
        latency.observe(self.loop.time() - exchange.start)
        if exchange.client_gone:
            outcome = "client_closed"
        elif exchange.broken:
            self.registry.record_failure(ep)
            outcome = "broken"
        else:
            if ep.failures:
                self.registry.record_success(ep)
            outcome = "ok" if exchange.status < 400 else f"http_{exchange.status // 100}xx"
        self.metrics.count_request(ep.url, outcome)
        # A broken Content-Length body cannot be completed: close to tell the client.
        conn.finish(close=exchange.broken and not exchange.chunked_out)
