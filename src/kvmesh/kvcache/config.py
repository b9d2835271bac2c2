"""``CacheConfig``: every knob of the tiered KV cache, validated at startup.

The vLLM connector builds it from ``kv_connector_extra_config`` (a dict) or
from ``KVMESH_*`` environment variables; both use the field names below.
Sizes accept units ("4GiB"), durations accept "50ms".
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from kvmesh.common.hashing import DEFAULT_CHUNK_SIZE
from kvmesh.common.units import parse_duration_s, parse_size
from kvmesh.kvcache.eviction import POLICIES

GIB = 1 << 30


@dataclass(frozen=True)
class CacheConfig:
    """Configuration of one :class:`~kvmesh.kvcache.tiered.TieredKVCache`."""

    l1_size_bytes: int = 4 * GIB
    """L1 (node CPU memory) budget. 4 GiB matches HyperPod's published CPU tier; 0 disables L1."""
    eviction_policy: str = "lru"
    """L1 eviction policy: ``lru``, ``lfu`` or ``fifo``."""
    l1_recycle_buffers: bool = True
    """Reuse the buffer of an entry evicted by a put for that put's copy, so a full L1 does not
    page-fault fresh memory on every store (several times faster for 2 MiB chunks). Safe for
    callers that keep chunk views only inside ``read()`` blocks, as the API requires."""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    """Tokens per chunk. Must equal the ``ChainSpec`` the cache is built with (checked)."""
    l2_url: str | None = None
    """L2 backend URL (``redis://``, ``rediss://``, ``kvmesh://``, ``memory://``); None: L1 only."""
    l2_deadline_s: float = 0.05
    """Fixed part of every L2 call's deadline. A healthy in-cluster Redis or kvmesh store answers
    a lookup in about a millisecond; 50 ms absorbs tail spikes, yet a stalled L2 adds at most about
    one decode step to the engine's scheduler thread, which is where ``lookup()`` runs. Past the
    deadline the call is a miss and the engine recomputes."""
    l2_min_bandwidth_bytes_per_s: int = 1_000_000_000
    """Data calls get ``l2_deadline_s + bytes / this`` in total. Below ~1 GB/s, fetching a
    256-token Llama-3.1-8B chunk (32 MiB) takes longer than a GPU needs to recompute it, so a
    slower transfer is abandoned rather than waited for."""
    l2_min_hit_chunks: int = 1
    """L2 runs shorter than this many chunks are ignored (a round trip for a tiny hit costs more
    than it saves)."""
    l2_write_queue_chunks: int = 64
    """Bound of the asynchronous L2 write queue. When full, new writes are dropped and counted;
    ``store()`` never waits. Queued chunks keep their memory alive (at most this many chunks)."""
    l2_write_batch_chunks: int = 8
    """Most chunks the writer sends in one pipelined ``put_many``."""
    l2_breaker_failure_threshold: int = 3
    """Consecutive L2 failures (errors or deadlines) that open the circuit breaker."""
    l2_breaker_reset_s: float = 1.0
    """While the breaker is open, the background reconnect probe tries this often."""

    def __post_init__(self) -> None:
        if self.l1_size_bytes < 0:
            raise ValueError(f"l1_size_bytes must be >= 0, got {self.l1_size_bytes}")
        if self.eviction_policy.lower() not in POLICIES:
            raise ValueError(
                f"eviction_policy must be one of {sorted(POLICIES)}, got {self.eviction_policy!r}"
            )
        if not 1 <= self.chunk_size <= 1 << 20:
            raise ValueError(f"chunk_size must be in [1, 2**20], got {self.chunk_size}")
        if self.l2_url is not None and "://" not in self.l2_url:
            raise ValueError(f"l2_url must look like scheme://..., got {self.l2_url!r}")
        if not 0 < self.l2_deadline_s <= 60:
            raise ValueError(f"l2_deadline_s must be in (0, 60], got {self.l2_deadline_s}")
        positive = (
            "l2_min_bandwidth_bytes_per_s",
            "l2_min_hit_chunks",
            "l2_write_queue_chunks",
            "l2_write_batch_chunks",
            "l2_breaker_failure_threshold",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.l2_breaker_reset_s <= 0:
            raise ValueError(f"l2_breaker_reset_s must be > 0, got {self.l2_breaker_reset_s}")

    def data_deadline_s(self, num_bytes: int) -> float:
        """Deadline of an L2 call that moves ``num_bytes``."""
        return self.l2_deadline_s + num_bytes / self.l2_min_bandwidth_bytes_per_s

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CacheConfig:
        """Build from field names to values (strings are parsed); ``ValueError`` on unknown keys."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown cache config keys {unknown}; known: {sorted(known)}")
        return cls(**{name: _parse(name, value) for name, value in values.items()})

    @classmethod
    def from_env(
        cls, prefix: str = "KVMESH_", environ: Mapping[str, str] | None = None
    ) -> CacheConfig:
        """Build from ``{prefix}{FIELD_NAME}`` variables, e.g. ``KVMESH_L1_SIZE_BYTES=8GiB``."""
        env = os.environ if environ is None else environ
        values = {
            f.name: env[prefix + f.name.upper()]
            for f in fields(cls)
            if prefix + f.name.upper() in env
        }
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> CacheConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


def _parse(name: str, value: Any) -> Any:
    """Turn a config value (often a string from env or JSON) into the field's type."""
    if not isinstance(value, str):
        return value
    try:
        if name.endswith(("_bytes", "_bytes_per_s")):
            return parse_size(value)
        if name.endswith("_s"):
            return parse_duration_s(value)
        if name in ("eviction_policy",):
            return value
        if name == "l1_recycle_buffers":
            return _parse_bool(value)
        if name == "l2_url":
            return value or None
        return int(value)
    except ValueError as exc:
        raise ValueError(f"cache config {name}: {exc}") from exc


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"invalid boolean {text!r} (use true or false)")
