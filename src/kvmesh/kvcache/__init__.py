"""The tiered KV cache library: L1 (node CPU memory) over L2 (cluster-wide).

Public API: :class:`TieredKVCache`, :class:`CacheConfig`, :class:`KVChunk`,
:class:`LookupResult`. Heavier pieces (L2 clients) load lazily by URL scheme.
"""

from kvmesh.kvcache.chunk import KVChunk
from kvmesh.kvcache.config import CacheConfig
from kvmesh.kvcache.tiered import LookupResult, TieredKVCache

__all__ = ["CacheConfig", "KVChunk", "LookupResult", "TieredKVCache"]
