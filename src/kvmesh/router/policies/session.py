"""``session``: consistent hashing on a session key (header, else body field).

The ring holds :data:`VNODES` points per *known* endpoint (healthy or not),
placed at ``xxh3_64(url + "#" + i)``. A session goes to the first point
clockwise of ``xxh3_64(key)`` whose endpoint is a candidate, so when one of n
endpoints joins or leaves only the sessions on its arcs (about 1/n) move, and
a briefly unhealthy endpoint gets its sessions back when it recovers.
Requests without the key go to the least loaded endpoint (reason
``fallback``).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import xxhash

from kvmesh.router.config import RouterConfig
from kvmesh.router.endpoints import Endpoint
from kvmesh.router.policies.base import Decision, PolicyDeps, RoutingPolicy, RoutingRequest, least_loaded

VNODES = 160
"""Ring points per endpoint; more points, smoother split."""


def ring_hash(text: str) -> int:
    """Position on the ring: xxh3-64 with seed 0 (stable across processes, unlike hash())."""
    return xxhash.xxh3_64_intdigest(text.encode("utf-8"))


class SessionPolicy(RoutingPolicy):
    name = "session"

    def __init__(self, config: RouterConfig, deps: PolicyDeps) -> None:
        super().__init__(config, deps)
        self._header = config.session_key.lower()
        self._urls: set[str] = set()
        self._points: list[int] = []
        self._owners: list[str] = []

    def set_members(self, urls: set[str]) -> None:
        """Rebuild the ring for exactly these endpoint URLs."""
        self._urls = set(urls)
        pairs = sorted((ring_hash(f"{url}#{i}"), url) for url in urls for i in range(VNODES))
        self._points = [p for p, _ in pairs]
        self._owners = [u for _, u in pairs]

    def on_endpoints_changed(self, added: list[Endpoint], removed: list[Endpoint]) -> None:
        self.set_members((self._urls | {e.url for e in added}) - {e.url for e in removed})

    def session_key(self, request: RoutingRequest) -> str | None:
        value = request.headers.get(self._header)
        if value is None:
            field_value = request.body.get(self.config.session_key)
            value = field_value if isinstance(field_value, (str, int)) else None
        return None if value is None else str(value)

    def select(self, request: RoutingRequest, candidates: Sequence[Endpoint]) -> Decision:
        key = self.session_key(request)
        if key is None:
            return Decision(least_loaded(candidates), "fallback")
        by_url = {e.url: e for e in candidates}
        if not by_url.keys() <= self._urls:
            self.set_members(self._urls | by_url.keys())
        n = len(self._points)
        start = bisect.bisect_left(self._points, ring_hash(key))
        for i in range(n):
            ep = by_url.get(self._owners[(start + i) % n])
            if ep is not None:
                return Decision(ep, "hash")
        return Decision(least_loaded(candidates), "fallback")  # unreachable with a full ring
