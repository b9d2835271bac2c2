"""The endpoint registry: who the backends are, how busy, and whether they may be used.

Each :class:`Endpoint` carries a live in-flight counter (the load signal of
every strategy) and a circuit breaker fed by passive failures (connect errors,
timeouts) and by the active health checker:

    CLOSED --(breaker_failures consecutive failures)--> OPEN
    OPEN   --(cooldown elapsed, then one health check OK)--> CLOSED

An endpoint that leaves discovery is removed at once, so there are no ghost
endpoints: policies only ever see :meth:`EndpointRegistry.available`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kvmesh.router.config import BackendSpec


@dataclass
class Endpoint:
    """One backend worker as the router sees it."""

    url: str
    """Normalised base URL, ``http://host:port``; also the endpoint's identity."""
    events_endpoint: str | None = None
    """Where the worker publishes KV events, if known."""
    host: str = field(init=False)
    port: int = field(init=False)
    in_flight: int = 0
    """Requests sent to it and not finished."""
    load_avg: float = 0.0
    """In-flight requests averaged over time (EWMA, see :meth:`track`), up to ``load_t``."""
    load_t: float = 0.0
    """Monotonic time ``load_avg`` was last brought up to date."""
    models: frozenset[str] = frozenset()
    """Model ids from its last /v1/models answer (empty: unknown yet)."""
    failures: int = 0
    """Consecutive failures (reset by any success)."""
    open_until: float = 0.0
    """Monotonic time the breaker stays open until; 0 when closed."""
    healthy: bool = True
    """False from the moment the breaker opens until a health check succeeds."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80

    def smoothed_load(self, now: float, tau_s: float) -> float:
        """The time-averaged in-flight count at ``now``; the raw count when ``tau_s`` is 0.

        The in-flight count is a step function, so the EWMA integrates the current
        level over the time since the last change: ``avg += (1 - e^(-dt/tau)) (level - avg)``.
        """
        if tau_s <= 0:
            return float(self.in_flight)
        dt = now - self.load_t
        if dt <= 0:
            return self.load_avg
        return self.load_avg + (1.0 - math.exp(-dt / tau_s)) * (self.in_flight - self.load_avg)

    def track(self, delta: int, now: float, tau_s: float) -> None:
        """Change the in-flight count by ``delta`` at ``now``, keeping the average exact."""
        self.load_avg = self.smoothed_load(now, tau_s)
        self.load_t = now
        self.in_flight += delta

    def serves(self, model: str) -> bool:
        """True if the endpoint serves ``model`` (or has not said yet)."""
        return not self.models or model in self.models


OnChange = Callable[[list[Endpoint], list[Endpoint]], None]
"""``on_change(added, removed)``."""


class EndpointRegistry:
    """The set of endpoints, with breaker bookkeeping; mutated only on the event loop."""

    def __init__(self, *, breaker_failures: int = 3, breaker_cooldown_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._by_url: dict[str, Endpoint] = {}
        self._available: list[Endpoint] = []
        self._listeners: list[OnChange] = []
        self._breaker_failures = breaker_failures
        self._cooldown_s = breaker_cooldown_s
        self._clock = clock

    def subscribe(self, listener: OnChange) -> None:
        """Call ``listener(added, removed)`` after every membership change."""
        self._listeners.append(listener)

    def get(self, url: str) -> Endpoint | None:
        return self._by_url.get(url)

    def all(self) -> list[Endpoint]:
        """Every known endpoint, healthy or not, in URL order."""
        return sorted(self._by_url.values(), key=lambda e: e.url)

    def available(self) -> list[Endpoint]:
        """Healthy endpoints in URL order (cached; rebuilt on every state change)."""
        return self._available

    def set_backends(self, specs: Iterable[BackendSpec]) -> None:
        """Replace the membership (discovery calls this with the full current set)."""
        wanted = {s.url: s for s in specs}
        removed = [e for url, e in self._by_url.items() if url not in wanted]
        added = []
        for url, spec in wanted.items():
            ep = self._by_url.get(url)
            if ep is None:
                ep = Endpoint(url, spec.events_endpoint)
                self._by_url[url] = ep
                added.append(ep)
            elif spec.events_endpoint and ep.events_endpoint != spec.events_endpoint:
                ep.events_endpoint = spec.events_endpoint
        for ep in removed:
            del self._by_url[ep.url]
        self._rebuild()
        if added or removed:
            for listener in self._listeners:
                listener(added, removed)

    def record_success(self, ep: Endpoint) -> None:
        """A request or health check succeeded: reset the failure count, re-admit."""
        ep.failures = 0
        if not ep.healthy and self._clock() >= ep.open_until:
            ep.healthy = True
            ep.open_until = 0.0
            self._rebuild()

    def record_failure(self, ep: Endpoint) -> None:
        """A connect error or timeout; opens the breaker after enough in a row."""
        ep.failures += 1
        if ep.failures >= self._breaker_failures and ep.healthy:
            ep.healthy = False
            ep.open_until = self._clock() + self._cooldown_s
            self._rebuild()

    def mark_down(self, ep: Endpoint) -> None:
        """Open the breaker at once (a health check found the endpoint dead)."""
        ep.failures = max(ep.failures, self._breaker_failures)
        if ep.healthy:
            ep.healthy = False
            ep.open_until = self._clock() + self._cooldown_s
            self._rebuild()

    def _rebuild(self) -> None:
        self._available = [e for e in self.all() if e.healthy]
