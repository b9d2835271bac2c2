"""``roundrobin``: each request to the next endpoint in URL order."""

from __future__ import annotations

from collections.abc import Sequence

from kvmesh.router.endpoints import Endpoint
from kvmesh.router.policies.base import Decision, RoutingPolicy, RoutingRequest


class RoundRobinPolicy(RoutingPolicy):
    name = "roundrobin"

    _next = 0

    def select(self, request: RoutingRequest, candidates: Sequence[Endpoint]) -> Decision:
        ep = candidates[self._next % len(candidates)]
        self._next += 1
        return Decision(ep, "roundrobin")
