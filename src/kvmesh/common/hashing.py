"""The one chunk-hash chain of kvmesh.

Every component that names a KV chunk (the cache library, the store, the vLLM
connector, the router's ``kvaware`` index, the simulator) calls this module.
There is no second implementation anywhere, so a router and a worker can never
disagree about a key unless their *configuration* differs, and that case is
made loud by the key version and chunk size carried in every KV event.

Two kinds of digest
-------------------
``prefix_hashes()`` -> **chain hashes**. They depend on the tokens, the model
id, the chunk size, the seed and the request extras (``cache_salt``, LoRA), but
*not* on how the KV is laid out in memory. The router computes them from the
prompt text alone, and KV events carry them.

``storage_key()`` -> **storage keys**. A chain hash mixed with the KV layout
(dtype, layers, KV heads, head dim, TP rank and world size, layout tag). This
is what the cache tiers are indexed by, so TP rank 0 and rank 1 of the same
prompt, or a bf16 and an fp8 engine, never read each other's bytes.

Canonical byte encodings (all integers little-endian)
-----------------------------------------------------
H(x) = BLAKE2b(x, digest_size=16, key=seed as u64 LE, person=b"kvmesh")

root   = H( b"kvmesh/root" | u16 version | u32 chunk_size | str model_id )
h_i    = H( b"kvmesh/chunk" | u16 version | h_{i-1} (16 B) | extras | u32[chunk_size] tokens_i )
extras = str cache_salt | str lora_name              (absent == empty string)
key    = H( b"kvmesh/store" | u16 version | h_i (16 B) | str kv_dtype
            | u32 num_layers | u32 num_kv_heads | u32 head_dim
            | u32 tp_rank | u32 tp_world_size | str layout_tag )
str s  = u32 byte length | UTF-8 bytes

with h_{-1} = root. Only *full* chunks get a hash: a partial tail chunk is
never cached, because its KV would change when the prompt grows.

BLAKE2b is cryptographic: a tenant cannot craft a collision with another
tenant's chunk, which a non-cryptographic hash (xxh3, Python's ``hash()``)
would allow. At ~1 KiB per 256-token chunk it costs about a microsecond.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

KEY_VERSION = 1
"""Version of the chain and key formats. Bump on any change to the encodings above."""

DEFAULT_CHUNK_SIZE = 256
"""Tokens per chunk, as in LMCache and HyperPod's published config."""

DEFAULT_HASH_SEED = 0
"""Seed used when none is configured. Every process of a fleet must agree on it."""

DIGEST_SIZE = 16
"""Bytes in a chain hash and in a storage key."""

_PERSON = b"kvmesh"
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_MAX_TOKEN_ID = 2**32 - 1


def _str(text: str) -> bytes:
    data = text.encode("utf-8")
    return _U32.pack(len(data)) + data


def _hasher(seed: int) -> hashlib.blake2b:
    if not 0 <= seed < 2**64:
        raise ValueError(f"hash seed must be in [0, 2**64), got {seed}")
    return hashlib.blake2b(digest_size=DIGEST_SIZE, key=seed.to_bytes(8, "little"), person=_PERSON)


@dataclass(frozen=True)
class RequestExtras:
    """Per-request inputs that change what a chunk's KV means, besides its tokens."""

    cache_salt: str | None = None
    """Tenant isolation: requests with different salts never share KV."""
    lora_name: str | None = None
    """The LoRA adapter the KV was computed with (None: the base model)."""

    def encode(self) -> bytes:
        """The canonical bytes of the extras; None and "" encode the same."""
        return _str(self.cache_salt or "") + _str(self.lora_name or "")


NO_EXTRAS = RequestExtras()


@dataclass(frozen=True)
class ChainSpec:
    """What every process that computes chain hashes for one fleet must agree on."""

    model_id: str
    """The served model name; KV of two models never matches."""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    """Tokens per chunk."""
    seed: int = DEFAULT_HASH_SEED
    """The hash seed (BLAKE2b key)."""

    def __post_init__(self) -> None:
        if not self.model_id:
            raise ValueError("model_id must be a non-empty string")
        if not 1 <= self.chunk_size <= 1 << 20:
            raise ValueError(f"chunk_size must be in [1, 2**20], got {self.chunk_size}")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")

    def root(self) -> bytes:
        """The chain's parent hash for the first chunk."""
        h = _hasher(self.seed)
        h.update(b"kvmesh/root" + _U16.pack(KEY_VERSION) + _U32.pack(self.chunk_size))
        h.update(_str(self.model_id))
        return h.digest()


@dataclass(frozen=True)
class KVLayout:
    """How a chunk's KV bytes are laid out; part of every storage key."""

    kv_dtype: str
    """Element type of the stored KV, for example "bfloat16" or "float8_e4m3fn"."""
    num_layers: int
    """Transformer layers whose KV is in the chunk."""
    num_kv_heads: int
    """KV heads held by this TP rank."""
    head_dim: int
    """Elements per head."""
    tp_rank: int = 0
    """Tensor-parallel rank that produced the chunk."""
    tp_world_size: int = 1
    """Tensor-parallel world size."""
    layout_tag: str = ""
    """Free-form tag for anything else that changes the bytes (for example a backend's block layout)."""

    def __post_init__(self) -> None:
        if not self.kv_dtype:
            raise ValueError("kv_dtype must be a non-empty string")
        for name in ("num_layers", "num_kv_heads", "head_dim", "tp_world_size"):
            value = getattr(self, name)
            if not 1 <= value < 2**32:
                raise ValueError(f"{name} must be in [1, 2**32), got {value}")
        if not 0 <= self.tp_rank < self.tp_world_size:
            raise ValueError(
                f"tp_rank must be in [0, tp_world_size={self.tp_world_size}), got {self.tp_rank}"
            )

    def encode(self) -> bytes:
        """The canonical bytes of the layout."""
        return (
            _str(self.kv_dtype)
            + _U32.pack(self.num_layers)
            + _U32.pack(self.num_kv_heads)
            + _U32.pack(self.head_dim)
            + _U32.pack(self.tp_rank)
            + _U32.pack(self.tp_world_size)
            + _str(self.layout_tag)
        )


def tokens_to_array(tokens: Sequence[int] | np.ndarray) -> np.ndarray:
    """Token ids as a contiguous little-endian uint32 array; ``ValueError`` if out of range."""
    if isinstance(tokens, np.ndarray):
        arr = tokens
    else:
        try:
            arr = np.fromiter(tokens, dtype=np.int64, count=len(tokens))
        except (TypeError, OverflowError) as exc:
            raise ValueError(f"tokens must be one-dimensional integers: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"tokens must be one-dimensional, got shape {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > _MAX_TOKEN_ID):
        raise ValueError("token ids must be in [0, 2**32)")
    return np.ascontiguousarray(arr, dtype="<u4")


def num_full_chunks(num_tokens: int, chunk_size: int) -> int:
    """How many complete chunks ``num_tokens`` tokens contain."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return max(num_tokens, 0) // chunk_size


def prefix_hashes(
    tokens: Sequence[int] | np.ndarray,
    spec: ChainSpec,
    extras: RequestExtras = NO_EXTRAS,
    *,
    max_chunks: int | None = None,
) -> list[bytes]:
    """Chain hashes ``[h_0, h_1, ...]`` of every full chunk of ``tokens``.

    ``h_i`` identifies the whole prefix ``tokens[: (i + 1) * chunk_size]``.
    ``max_chunks`` stops the chain early (for example, at a lookup budget).
    """
    arr = tokens_to_array(tokens)
    count = num_full_chunks(arr.size, spec.chunk_size)
    if max_chunks is not None:
        count = min(count, max(max_chunks, 0))
    prefix = b"kvmesh/chunk" + _U16.pack(KEY_VERSION)
    extras_bytes = extras.encode()
    parent = spec.root()
    out: list[bytes] = []
    step = spec.chunk_size
    data = memoryview(arr.data).cast("B")
    width = step * 4
    for i in range(count):
        h = _hasher(spec.seed)
        h.update(prefix)
        h.update(parent)
        h.update(extras_bytes)
        h.update(data[i * width : (i + 1) * width])
        parent = h.digest()
        out.append(parent)
    return out


def storage_key(chain_hash: bytes, layout: KVLayout, seed: int = DEFAULT_HASH_SEED) -> bytes:
    """The cache-tier key of one chunk: its chain hash bound to a KV layout."""
    if len(chain_hash) != DIGEST_SIZE:
        raise ValueError(f"chain hash must be {DIGEST_SIZE} bytes, got {len(chain_hash)}")
    h = _hasher(seed)
    h.update(b"kvmesh/store" + _U16.pack(KEY_VERSION))
    h.update(chain_hash)
    h.update(layout.encode())
    return h.digest()


def storage_keys(chain_hashes: Sequence[bytes], layout: KVLayout, seed: int = DEFAULT_HASH_SEED) -> list[bytes]:
    """:func:`storage_key` for each chain hash, in order."""
    return [storage_key(h, layout, seed) for h in chain_hashes]


def key_text(key: bytes) -> str:
    """Printable, versioned form of a chain hash or storage key: ``"v1:<32 hex>"``."""
    return f"v{KEY_VERSION}:{key.hex()}"


def parse_key_text(text: str) -> bytes:
    """Inverse of :func:`key_text`; ``ValueError`` on another version or bad hex."""
    version, sep, hexpart = text.partition(":")
    if not sep or version != f"v{KEY_VERSION}":
        raise ValueError(f"not a v{KEY_VERSION} kvmesh key: {text!r}")
    try:
        key = bytes.fromhex(hexpart)
    except ValueError as exc:
        raise ValueError(f"bad hex in key {text!r}") from exc
    if len(key) != DIGEST_SIZE:
        raise ValueError(f"key must be {DIGEST_SIZE} bytes: {text!r}")
    return key
