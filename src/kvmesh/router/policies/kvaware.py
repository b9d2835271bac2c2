"""``kvaware``: pick the endpoint with the lowest estimated TTFT, from KV events.

The router tokenizes the prompt with the model's own tokenizer and chat
template (``--model-dir``), so it works for chat completions as well as
completions, and computes the same chain hashes the workers publish
(:func:`kvmesh.common.hashing.prefix_hashes`). For each candidate endpoint::

    est_ttft = Σ over its contiguous hit prefix  load_ms(tier) × chunk_size
             + prefill_ms × (prompt tokens − hit tokens)
             + queue_ms × in_flight

where a chunk counts for an endpoint if the endpoint holds it in its engine or
L1, or if *any* worker holds it in L2 (cluster-wide, readable by all). The
lowest estimate wins; ties go to the least loaded. When no worker holds even
the first chunk (no events yet, a short prompt) the decision falls back to
``prefixaware`` (reason ``fallback``), which also keeps learning from every
kvaware decision so the fallback stays warm.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvmesh.common.hashing import ChainSpec, RequestExtras, prefix_hashes
from kvmesh.common.kv_events import Tier
from kvmesh.router.config import RouterConfig
from kvmesh.router.endpoints import Endpoint
from kvmesh.router.kv_index import TIER_BITS, best_tier
from kvmesh.router.policies.base import Decision, PolicyDeps, RoutingPolicy, RoutingRequest
from kvmesh.router.policies.prefixaware import PrefixAwarePolicy

_L2_BIT = TIER_BITS[Tier.L2]


class KVAwarePolicy(RoutingPolicy):
    name = "kvaware"

    def __init__(self, config: RouterConfig, deps: PolicyDeps) -> None:
        super().__init__(config, deps)
        if deps.renderer is None:
            raise ValueError("kvaware needs a model renderer (--model-dir)")
        self.renderer = deps.renderer
        self.fallback = PrefixAwarePolicy(config, deps)
        cm = config.cost_model
        self._load_ms = {Tier.ENGINE: cm.load_engine_ms_per_token, Tier.L1: cm.load_l1_ms_per_token,
                         Tier.L2: cm.load_l2_ms_per_token}
        self._specs: dict[str, ChainSpec] = {}

    def chain_hashes(self, request: RoutingRequest) -> tuple[list[bytes], int]:
        """The request's chain hashes and its prompt length in tokens."""
        tokens = self.renderer.token_ids(request.path, request.body)
        model = request.model
        base = self.config.model_id or model
        lora = model if self.config.model_id and model != self.config.model_id else None
        spec = self._specs.get(base)
        if spec is None:
            spec = self._specs[base] = ChainSpec(base, self.config.chunk_size, self.config.hash_seed)
        salt = request.body.get("cache_salt")
        extras = RequestExtras(cache_salt=salt if isinstance(salt, str) else None, lora_name=lora)
        return prefix_hashes(tokens, spec, extras), len(tokens)

    def estimate_ms(self, ep: Endpoint, holders: list[dict[str, int]], num_tokens: int) -> float:
        """Estimated TTFT of ``ep`` for a prompt whose chunks are held by ``holders``."""
        cm = self.config.cost_model
        load = 0.0
        hit_chunks = 0
        for chunk in holders:
            bits = chunk.get(ep.url, 0)
            tier = best_tier(bits) if bits else None
            if tier is None:
                if not any(b & _L2_BIT for b in chunk.values()):
                    break
                tier = Tier.L2
            load += self._load_ms[tier]
            hit_chunks += 1
        hit_tokens = hit_chunks * self.config.chunk_size
        return (load * self.config.chunk_size + cm.prefill_ms_per_token * (num_tokens - hit_tokens)
                + cm.queue_ms_per_request * ep.in_flight)

    def select(self, request: RoutingRequest, candidates: Sequence[Endpoint]) -> Decision:
        hashes, num_tokens = self.chain_hashes(request)
        holders = self.deps.kv_index.lookup(hashes)
        if not holders:
            decision = self.fallback.select(request, candidates)
            return Decision(decision.endpoint, "fallback")
        scored = [(self.estimate_ms(e, holders, num_tokens), e.in_flight, i, e)
                  for i, e in enumerate(candidates)]
        best = min(scored)
        ep = best[3]
        hit = any(ep.url in chunk or any(b & _L2_BIT for b in chunk.values()) for chunk in holders[:1])
        decision = Decision(ep, "kv_hit" if hit else "kv_miss")
        self.fallback.record(request.text, Decision(ep, "affinity"))
        return decision

    def on_endpoints_changed(self, added: list[Endpoint], removed: list[Endpoint]) -> None:
        self.fallback.on_endpoints_changed(added, removed)
        for ep in removed:
            self.deps.kv_index.clear_source(ep.url)

    def structure_sizes(self) -> dict[str, tuple[int, int]]:
        index = self.deps.kv_index
        sizes = {**self.fallback.structure_sizes(), "kv_index": (len(index), index.num_bytes)}
        cache = self.renderer.token_cache
        if cache is not None:
            sizes["token_cache"] = (len(cache), cache.num_bytes)
        return sizes
