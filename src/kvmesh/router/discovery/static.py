"""Static discovery: the ``--backend`` list, fixed for the router's lifetime."""

from __future__ import annotations

from kvmesh.router.discovery.base import Discovery


class StaticDiscovery(Discovery):
    async def start(self) -> None:
        self.registry.set_backends(self.config.backends)
