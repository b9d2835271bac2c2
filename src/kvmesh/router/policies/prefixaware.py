"""``prefixaware`` (default): prefix affinity bounded by live load.

Algorithm, per request (docs/router.md draws it):

1. Look the routing text up in the radix tree.
2. If it *extends an earlier request* (the next turn of a conversation), the
   endpoints that served that request are its owners. The least loaded owner
   keeps the request while ``load + 1 <= cap`` (load: the in-flight count
   averaged over ``load_smoothing_s``, so a momentary burst of turns does not
   break affinity), with
   cap = max(ceil(load_factor * mean), ceil(mean) + load_slack) and
   mean = (Σ load + 1) / candidates: bounded-load affinity
   (reason ``affinity``). Otherwise the request spills to the least loaded
   endpoint, which becomes the new owner (reason ``spill``).
3. Otherwise it is a new conversation, even if it shares a long system prompt
   with others: among the endpoints within the same load bound, it goes to the
   one given the fewest new conversations so far, then the fewest in flight,
   then the longest partial prefix match (reason ``new``). Counting assigned
   conversations is what spreads new conversations evenly, whether traffic is
   sequential (every in-flight count zero) or a burst.
4. The choice is recorded in the tree (LRU-trimmed, byte-bounded).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence

from kvmesh.router.config import RouterConfig
from kvmesh.router.endpoints import Endpoint
from kvmesh.router.policies.base import Decision, PolicyDeps, RoutingPolicy, RoutingRequest, least_loaded
from kvmesh.router.radix_tree import RadixTree


class PrefixAwarePolicy(RoutingPolicy):
    name = "prefixaware"

    def __init__(self, config: RouterConfig, deps: PolicyDeps) -> None:
        super().__init__(config, deps)
        self.tree = RadixTree(config.tree_max_bytes)
        self.assigned_new: dict[str, int] = {}
        """Endpoint URL -> new conversations given to it."""

    def select(self, request: RoutingRequest, candidates: Sequence[Endpoint]) -> Decision:
        text = request.text
        match = self.tree.match(text)
        decision = self._decide(match.extends, match.matched_chars, candidates)
        self.record(text, decision)
        return decision

    def _decide(self, extends: frozenset[str], matched: dict[str, int],
                candidates: Sequence[Endpoint]) -> Decision:
        now, tau = time.monotonic(), self.config.load_smoothing_s
        loads = {e.url: e.smoothed_load(now, tau) for e in candidates}
        cap = self.load_cap(loads.values())
        owners = [e for e in candidates if e.url in extends]
        if owners:
            owner = min(owners, key=lambda e: loads[e.url])
            if loads[owner.url] + 1 <= cap:
                return Decision(owner, "affinity")
            target = least_loaded(candidates)  # by requests in flight right now
            return Decision(target, "affinity" if target is owner else "spill")
        # New conversation: balance conversation counts among endpoints within the load
        # bound (sticky turns make conversations, not requests, the unit of load).
        eligible = [e for e in candidates if loads[e.url] + 1 <= cap] or list(candidates)
        assigned = self.assigned_new
        ep = min(eligible, key=lambda e: (assigned.get(e.url, 0), e.in_flight, -matched.get(e.url, 0)))
        return Decision(ep, "new")

    def load_cap(self, loads: Collection[float]) -> int:
        """Most load an owner may have, this request included, and keep affinity."""
        mean = (sum(loads) + 1) / len(loads)
        return max(math.ceil(self.config.load_factor * mean), math.ceil(mean) + self.config.load_slack)

    def record(self, text: str, decision: Decision) -> None:
        """Remember that ``decision.endpoint`` now holds ``text``."""
        url = decision.endpoint.url
        if decision.reason == "new":
            self.assigned_new[url] = self.assigned_new.get(url, 0) + 1
        self.tree.insert(text, url)

    def on_endpoints_changed(self, added: list[Endpoint], removed: list[Endpoint]) -> None:
        for ep in removed:
            self.tree.remove_endpoint(ep.url)
            self.assigned_new.pop(ep.url, None)
        if added:
            # A joining endpoint starts level with the others instead of
            # receiving every new conversation until it catches up.
            level = min(self.assigned_new.values(), default=0)
            for ep in added:
                self.assigned_new[ep.url] = level

    def structure_sizes(self) -> dict[str, tuple[int, int]]:
        return {"prefix_tree": (self.tree.num_nodes, self.tree.num_bytes)}
