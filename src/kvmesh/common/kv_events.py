"""KV events: which chunks a worker admitted to or evicted from which tier.

Workers (the vLLM connector, the simulator) publish them; the router's
``kvaware`` strategy consumes them to keep its chunk index exact.

Wire format (version ``KV_EVENT_VERSION``), msgpack, one batch per message::

    {
      "v":   1,                  # KV_EVENT_VERSION; a reader rejects any other
      "kv":  1,                  # hashing.KEY_VERSION the publisher computed keys with
      "cs":  256,                # chunk size in tokens
      "src": "http://10.0.0.7:8000",  # the publishing worker's serving endpoint
      "m":   "demo",             # model id
      "seq": 42,                 # per-publisher sequence number, +1 per batch (gap detection)
      "ts":  1732190000.123,     # publisher wall clock, seconds
      "ev":  [[kind, tier, [chain_hash, ...]], ...]
    }

``kind`` is 0 admitted, 1 evicted, 2 cleared (the tier dropped everything; the
hash list is empty). ``tier`` is one of :class:`Tier`'s values. Chain hashes
are the 16-byte digests of :func:`kvmesh.common.hashing.prefix_hashes`, not
storage keys, so the router can compute them from the prompt.

The key version and chunk size ride in every batch so that a router whose
own hashing config differs can say so loudly (metric + error log) instead of
silently matching nothing, the number-one complaint about peers.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgpack

from kvmesh.common.errors import ProtocolError, VersionMismatchError
from kvmesh.common.hashing import DIGEST_SIZE

KV_EVENT_VERSION = 1
"""Version of the KV event wire format."""

KV_EVENT_TOPIC = b"kvmesh.kv"
"""Topic frame used on pub/sub transports."""


class Tier(str, enum.Enum):
    """Where a chunk's KV lives, fastest first."""

    ENGINE = "engine"
    """In the engine's own (GPU or CPU) paged KV: no load needed."""
    L1 = "l1"
    """In this worker node's CPU memory tier."""
    L2 = "l2"
    """In the cluster-wide tier: any worker can load it."""


class EventKind(enum.IntEnum):
    """What happened to the chunks of one event."""

    ADMITTED = 0
    EVICTED = 1
    CLEARED = 2


@dataclass(frozen=True)
class KVEvent:
    """One change to one tier of one worker."""

    kind: EventKind
    tier: Tier
    chain_hashes: tuple[bytes, ...] = ()


@dataclass
class KVEventBatch:
    """Everything one publisher says in one message."""

    source: str
    """The publishing worker's serving endpoint (what the router routes to)."""
    model_id: str
    chunk_size: int
    key_version: int
    seq: int
    events: list[KVEvent] = field(default_factory=list)
    timestamp: float = field(default_factory=time.time)
    version: int = KV_EVENT_VERSION


def encode_batch(batch: KVEventBatch) -> bytes:
    """Serialize a batch to its msgpack wire form."""
    payload = {
        "v": batch.version,
        "kv": batch.key_version,
        "cs": batch.chunk_size,
        "src": batch.source,
        "m": batch.model_id,
        "seq": batch.seq,
        "ts": batch.timestamp,
        "ev": [[int(e.kind), e.tier.value, list(e.chain_hashes)] for e in batch.events],
    }
    return msgpack.packb(payload, use_bin_type=True)


def decode_batch(data: bytes) -> KVEventBatch:
    """Parse a wire message.

    Raises :class:`VersionMismatchError` for another wire version and
    :class:`ProtocolError` for anything malformed. Never returns partial data.
    """
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"KV event is not valid msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("KV event batch must be a map")
    version = obj.get("v")
    if version != KV_EVENT_VERSION:
        raise VersionMismatchError("KV event", KV_EVENT_VERSION, version if isinstance(version, int) else -1)
    try:
        events = [_decode_event(item) for item in obj["ev"]]
        return KVEventBatch(
            source=_typed(obj["src"], str, "src"),
            model_id=_typed(obj["m"], str, "m"),
            chunk_size=_typed(obj["cs"], int, "cs"),
            key_version=_typed(obj["kv"], int, "kv"),
            seq=_typed(obj["seq"], int, "seq"),
            events=events,
            timestamp=float(_typed(obj["ts"], (int, float), "ts")),
            version=version,
        )
    except KeyError as exc:
        raise ProtocolError(f"KV event batch lacks field {exc}") from exc


def _typed(value: object, kind: type | tuple[type, ...], name: str):  # noqa: ANN202
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError(f"KV event field {name!r} has the wrong type")
    return value


def _decode_event(item: object) -> KVEvent:
    if not isinstance(item, (list, tuple)) or len(item) != 3:
        raise ProtocolError("KV event must be [kind, tier, hashes]")
    kind_raw, tier_raw, hashes = item
    try:
        kind = EventKind(kind_raw)
        tier = Tier(tier_raw)
    except ValueError as exc:
        raise ProtocolError(f"unknown KV event kind or tier: {exc}") from exc
    if not isinstance(hashes, (list, tuple)) or not all(
        isinstance(h, bytes) and len(h) == DIGEST_SIZE for h in hashes
    ):
        raise ProtocolError(f"KV event hashes must be {DIGEST_SIZE}-byte strings")
    return KVEvent(kind, tier, tuple(hashes))


def admitted(tier: Tier, hashes: Sequence[bytes]) -> KVEvent:
    """Shorthand for an ADMITTED event."""
    return KVEvent(EventKind.ADMITTED, tier, tuple(hashes))


def evicted(tier: Tier, hashes: Sequence[bytes]) -> KVEvent:
    """Shorthand for an EVICTED event."""
    return KVEvent(EventKind.EVICTED, tier, tuple(hashes))
