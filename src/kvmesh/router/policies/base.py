"""The routing-policy interface and its registry by strategy name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvmesh.router.config import RouterConfig
from kvmesh.router.endpoints import Endpoint
from kvmesh.router.kv_index import KVIndex
from kvmesh.router.routing_text import ModelRenderer, routing_text


@dataclass
class RoutingRequest:
    """One request as policies see it. Derived values are computed once, on demand."""

    path: str
    """``/v1/completions`` or ``/v1/chat/completions``."""
    body: dict[str, Any]
    """The parsed JSON body."""
    headers: dict[str, str]
    """Request headers, names lower-cased."""
    _text: str | None = field(default=None, repr=False)

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def text(self) -> str:
        """The routing text (see :mod:`kvmesh.router.routing_text`)."""
        if self._text is None:
            self._text = routing_text(self.path, self.body)
        return self._text


@dataclass(frozen=True)
class Decision:
    """Where a request goes and why (the reason is a metric label)."""

    endpoint: Endpoint
    reason: str
    """One of: affinity, spill, new, fallback, hash, roundrobin, kv_hit, kv_miss."""


@dataclass
class PolicyDeps:
    """Shared state policies may use; built once by the app."""

    kv_index: KVIndex
    renderer: ModelRenderer | None = None


class RoutingPolicy(ABC):
    """Chooses one endpoint for a request.

    Contract:
    - ``select`` is called on the event loop with a non-empty list of
      candidates (healthy, serving the model, not yet tried for this request)
      in URL order, and returns one of them. It must be fast (no I/O) and
      deterministic given the same state.
    - It may record the choice in its own state (prefix owners, ...).
    - ``on_endpoints_changed`` is called when endpoints join or leave discovery.
    - ``structure_sizes`` reports bounded structures as ``{name: (entries, bytes)}``.
    """

    name: str

    def __init__(self, config: RouterConfig, deps: PolicyDeps) -> None:
        self.config = config
        self.deps = deps

    @abstractmethod
    def select(self, request: RoutingRequest, candidates: Sequence[Endpoint]) -> Decision:
        """Pick the endpoint for ``request``."""

    def on_endpoints_changed(self, added: list[Endpoint], removed: list[Endpoint]) -> None:
        """Membership changed (default: nothing to do)."""

    def structure_sizes(self) -> dict[str, tuple[int, int]]:
        """Sizes of bounded structures, for the index-size metrics."""
        return {}


def least_loaded(candidates: Sequence[Endpoint]) -> Endpoint:
    """Fewest in-flight requests; ties go to the first in URL order."""
    return min(candidates, key=lambda e: e.in_flight)


PolicyFactory = Callable[[RouterConfig, PolicyDeps], RoutingPolicy]
_POLICIES: dict[str, str] = {
    "prefixaware": "kvmesh.router.policies.prefixaware:PrefixAwarePolicy",
    "kvaware": "kvmesh.router.policies.kvaware:KVAwarePolicy",
    "session": "kvmesh.router.policies.session:SessionPolicy",
    "roundrobin": "kvmesh.router.policies.roundrobin:RoundRobinPolicy",
}


def create_policy(name: str, config: RouterConfig, deps: PolicyDeps) -> RoutingPolicy:
    """Instantiate the strategy called ``name``; ``ValueError`` if unknown."""
    import importlib

    ref = _POLICIES.get(name)
    if ref is None:
        raise ValueError(f"unknown routing strategy {name!r}; use one of {sorted(_POLICIES)}")
    module_name, _, cls_name = ref.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(config, deps)
