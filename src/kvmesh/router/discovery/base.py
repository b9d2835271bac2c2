"""The discovery interface and its registry by name."""

from __future__ import annotations

from abc import ABC, abstractmethod

from kvmesh.router.config import RouterConfig
from kvmesh.router.endpoints import EndpointRegistry


class Discovery(ABC):
    """Keeps an :class:`EndpointRegistry`'s membership current.

    Contract: ``start`` sets the initial membership before returning (so the
    router never serves with an empty view it could have filled); ``run``
    then follows changes until cancelled, calling
    ``registry.set_backends(full_current_set)`` after each one; it never
    raises on transient API failures (it retries with back-off).
    """

    def __init__(self, config: RouterConfig, registry: EndpointRegistry) -> None:
        self.config = config
        self.registry = registry

    @abstractmethod
    async def start(self) -> None:
        """Load the initial membership."""

    async def run(self) -> None:
        """Follow changes until cancelled (default: nothing changes)."""


def create_discovery(config: RouterConfig, registry: EndpointRegistry) -> Discovery:
    """Kubernetes when a namespace and selector are set, else the static list."""
    if config.k8s_namespace and config.k8s_selector:
        from kvmesh.router.discovery.k8s import KubernetesDiscovery

        return KubernetesDiscovery(config, registry)
    from kvmesh.router.discovery.static import StaticDiscovery

    return StaticDiscovery(config, registry)
