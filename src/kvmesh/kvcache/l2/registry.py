"""Pick an L2 backend by URL scheme.

Built-in schemes are listed as lazy ``"module:factory"`` references so that
importing the cache library never imports a client library it does not use.
Plugins add schemes with :func:`register_l2_backend`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from urllib.parse import urlsplit

from kvmesh.kvcache.l2.base import L2Backend

L2Factory = Callable[[str], L2Backend]

_BUILTIN: dict[str, str] = {
    "redis": "kvmesh.kvcache.l2.redis_backend:RedisL2Backend.from_url",
    "rediss": "kvmesh.kvcache.l2.redis_backend:RedisL2Backend.from_url",
    "kvmesh": "kvmesh.store.client:StoreL2Backend.from_url",
    "memory": "kvmesh.kvcache.l2.memory_backend:MemoryL2Backend.from_url",
}
_REGISTERED: dict[str, L2Factory] = {}


def register_l2_backend(scheme: str, factory: L2Factory) -> None:
    """Make ``scheme://...`` URLs create backends with ``factory(url)``."""
    if not scheme or not scheme.isascii() or not scheme.replace("+", "").isalnum():
        raise ValueError(f"invalid URL scheme {scheme!r}")
    _REGISTERED[scheme.lower()] = factory


def registered_schemes() -> list[str]:
    """Every scheme a URL may use, sorted."""
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def _resolve(ref: str) -> L2Factory:
    module_name, _, attr_path = ref.partition(":")
    obj: object = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj  # type: ignore[return-value]


def create_l2_backend(url: str) -> L2Backend:
    """Create the backend for ``url``; ``ValueError`` for an unknown scheme or bad URL."""
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        raise ValueError(f"L2 URL {url!r} has no scheme; use one of {registered_schemes()}")
    factory = _REGISTERED.get(scheme)
    if factory is None:
        ref = _BUILTIN.get(scheme)
        if ref is None:
            raise ValueError(f"unknown L2 URL scheme {scheme!r}; use one of {registered_schemes()}")
        factory = _resolve(ref)
    return factory(url)
