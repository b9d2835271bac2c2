"""Connector configuration: ``kv_connector_extra_config`` keys, then ``KVMESH_*`` env vars.

Precedence, highest first: a key in vLLM's ``kv_connector_extra_config``, the
matching environment variable, the default. Sizes and durations accept the
human forms of :mod:`kvmesh.common.units` ("4GiB", "50ms").

=====================  ==============================  =====================
extra_config key       environment variable            default
=====================  ==============================  =====================
chunk_size             KVMESH_CHUNK_SIZE               256
l1_size                KVMESH_L1_SIZE                  4GiB
eviction_policy        KVMESH_EVICTION_POLICY          lru
l2_url                 KVMESH_L2_URL                   (none: L1 only)
l2_deadline            KVMESH_L2_DEADLINE              50ms
kv_events_endpoint     KVMESH_KV_EVENTS_ENDPOINT       (none: no events)
kv_events_source       KVMESH_KV_EVENTS_SOURCE         "" (the worker's URL)
hash_seed              KVMESH_HASH_SEED                0
min_hit_tokens         KVMESH_MIN_HIT_TOKENS           chunk_size
metrics_port           KVMESH_CONNECTOR_METRICS_PORT   0 (no side server)
model_id               KVMESH_MODEL_ID                 vLLM's served model name
=====================  ==============================  =====================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from kvmesh.common.hashing import DEFAULT_CHUNK_SIZE, DEFAULT_HASH_SEED
from kvmesh.common.units import parse_duration_s, parse_size

DEFAULT_L1_SIZE_BYTES = 4 << 30
DEFAULT_L2_DEADLINE_S = 0.05


@dataclass(frozen=True)
class ConnectorConfig:
    """Everything the kvmesh KV connector needs besides what vLLM tells it."""

    model_id: str = ""
    """Model id in chain hashes; empty means vLLM's served model name (what the router sees)."""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    """Tokens per cached chunk; must be a multiple of vLLM's KV block size."""
    l1_size_bytes: int = DEFAULT_L1_SIZE_BYTES
    """Byte budget of the node-memory tier (0 disables L1)."""
    eviction_policy: str = "lru"
    """L1 eviction policy name, as registered in the cache library."""
    l2_url: str | None = None
    """Cluster-wide tier URL (``redis://``, ``kvmesh://``); None for L1 only."""
    l2_deadline_s: float = DEFAULT_L2_DEADLINE_S
    """Deadline of every L2 lookup and load; a late answer is a miss and the engine recomputes."""
    kv_events_endpoint: str | None = None
    """ZeroMQ endpoint the KV event publisher binds (``tcp://127.0.0.1:5557``); None: no events."""
    kv_events_source: str = ""
    """The serving URL this worker is known by in KV events (what the router routes to)."""
    hash_seed: int = DEFAULT_HASH_SEED
    """Chain-hash seed; every process of a fleet must agree."""
    min_hit_tokens: int = 0
    """Smallest external hit worth loading (0: one chunk); tiny hits cost more than they save."""
    metrics_port: int = 0
    """Loopback port of the connector's side /metrics (0: none); ``kvmesh worker`` merges it."""

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_size <= 1 << 20:
            raise ValueError(f"chunk_size must be in [1, 2**20], got {self.chunk_size}")
        if self.l1_size_bytes < 0:
            raise ValueError(f"l1_size_bytes must be >= 0, got {self.l1_size_bytes}")
        if not self.eviction_policy:
            raise ValueError("eviction_policy must be non-empty")
        if self.l2_url is not None and "://" not in self.l2_url:
            raise ValueError(
                f"l2_url must be a URL such as redis://host:6379/0, got {self.l2_url!r}"
            )
        if not 0 < self.l2_deadline_s <= 60:
            raise ValueError(f"l2_deadline_s must be in (0, 60], got {self.l2_deadline_s}")
        if self.kv_events_endpoint is not None and "://" not in self.kv_events_endpoint:
            raise ValueError(
                f"kv_events_endpoint must be a ZeroMQ endpoint, got {self.kv_events_endpoint!r}"
            )
        if not 0 <= self.hash_seed < 2**64:
            raise ValueError(f"hash_seed must be in [0, 2**64), got {self.hash_seed}")
        if self.min_hit_tokens < 0:
            raise ValueError(f"min_hit_tokens must be >= 0, got {self.min_hit_tokens}")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be in [0, 65535], got {self.metrics_port}")

    @property
    def effective_min_hit_tokens(self) -> int:
        """``min_hit_tokens``, with 0 meaning one chunk."""
        return self.min_hit_tokens or self.chunk_size

    def check_block_size(self, block_size: int) -> None:
        """``ValueError`` unless chunks tile vLLM's KV blocks exactly (copies move whole blocks)."""
        if block_size < 1 or self.chunk_size % block_size:
            raise ValueError(
                f"chunk_size {self.chunk_size} must be a multiple of vLLM's block size {block_size}"
            )

    @classmethod
    def load(
        cls, extra: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> ConnectorConfig:
        """Build from extra_config keys over environment variables over defaults."""
        extra = extra or {}
        env = os.environ if env is None else env
        unknown = set(extra) - set(_KEYS)
        if unknown:
            raise ValueError(f"unknown kvmesh connector config keys: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for key, (env_name, field_name, parse) in _KEYS.items():
            raw = extra.get(key, env.get(env_name))
            if raw is None or raw == "":
                continue
            try:
                values[field_name] = parse(raw)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"kvmesh connector config {key} ({env_name}): {exc}") from exc
        return cls(**values)

    def to_extra_config(self) -> dict[str, Any]:
        """The ``kv_connector_extra_config`` dict that :meth:`load` reads back to this config."""
        by_field = {field_name: key for key, (_, field_name, _) in _KEYS.items()}
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value != "":
                out[by_field[f.name]] = value
        return out


def _int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected an integer, got a boolean")
    return int(raw)


# extra_config key -> (environment variable, dataclass field, parser)
_KEYS: dict[str, tuple[str, str, Callable[[Any], Any]]] = {
    "model_id": ("KVMESH_MODEL_ID", "model_id", str),
    "chunk_size": ("KVMESH_CHUNK_SIZE", "chunk_size", _int),
    "l1_size": ("KVMESH_L1_SIZE", "l1_size_bytes", parse_size),
    "eviction_policy": ("KVMESH_EVICTION_POLICY", "eviction_policy", str),
    "l2_url": ("KVMESH_L2_URL", "l2_url", str),
    "l2_deadline": ("KVMESH_L2_DEADLINE", "l2_deadline_s", parse_duration_s),
    "kv_events_endpoint": ("KVMESH_KV_EVENTS_ENDPOINT", "kv_events_endpoint", str),
    "kv_events_source": ("KVMESH_KV_EVENTS_SOURCE", "kv_events_source", str),
    "hash_seed": ("KVMESH_HASH_SEED", "hash_seed", _int),
    "min_hit_tokens": ("KVMESH_MIN_HIT_TOKENS", "min_hit_tokens", _int),
    "metrics_port": ("KVMESH_CONNECTOR_METRICS_PORT", "metrics_port", _int),
}
