"""L2 backends, chosen by URL scheme (see :mod:`kvmesh.kvcache.l2.registry`)."""

from kvmesh.kvcache.l2.base import L2Backend
from kvmesh.kvcache.l2.registry import create_l2_backend, register_l2_backend, registered_schemes

__all__ = ["L2Backend", "create_l2_backend", "register_l2_backend", "registered_schemes"]
