"""The versioned binary framing of a KV chunk, as stored in L2 (and laid out in L1).

Wire layout (all integers little-endian; one fixed 64-byte header)::

    0      4       6    7    8            16           24                 56        60     64
    +------+-------+----+----+------------+------------+------------------+---------+------+
    |magic |version|dt  |ndim|payload_len |payload_xxh3|shape: 8 x u32    |hdr xxh32|rsvd  |
    |"KVMC"|u16 = 1|u8  |u8  |u64         |u64         |(0 past ndim)     |u32      |u32=0 |
    +------+-------+----+----+------------+------------+------------------+---------+------+
    | payload: payload_len raw bytes, C order (64-byte aligned within the value) ...
    +--------------------------------------------------------------------------------------

- ``dt`` is a code from :mod:`kvmesh.kvcache.dtypes`; ``payload_len`` must equal
  ``prod(shape) * itemsize`` and the value must be exactly ``64 + payload_len``.
- ``payload_xxh3`` is XXH3-64 of the payload: fast enough (~10+ GB/s) to check
  every L2 read. ``header xxh32`` covers bytes 0..55 and ``rsvd`` must be 0,
  so a flipped shape or length byte is caught before the payload is read.
- Any failed check raises :class:`~kvmesh.common.errors.CorruptEntryError`,
  which the cache turns into a counted miss; another version is corrupt too
  (an old reader must never guess at a newer layout).

Copies: a :class:`Frame` is one allocation holding header space plus payload,
so L1 keeps the payload there and L2 sends the whole frame as one memoryview;
decoding returns views into the received buffer.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash

from kvmesh.common.errors import CorruptEntryError
from kvmesh.kvcache.chunk import MAX_NDIM, KVChunk
from kvmesh.kvcache.dtypes import BY_CODE, dtype_by_name

MAGIC = b"KVMC"
"""First four bytes of every framed chunk."""
SERDE_VERSION = 1
"""Version of the header layout above."""
HEADER_SIZE = 64
"""Bytes before the payload."""

_FIXED = struct.Struct("<4sHBBQQ")  # magic, version, dtype, ndim, payload_len, payload_xxh3
_SHAPE = struct.Struct(f"<{MAX_NDIM}I")
_TAIL = struct.Struct("<II")  # header xxh32, reserved
_SHAPE_AT = _FIXED.size  # 24
_CHECK_AT = _SHAPE_AT + _SHAPE.size  # 56


def _pack_header(chunk: KVChunk) -> bytes:
    dims = list(chunk.shape) + [0] * (MAX_NDIM - len(chunk.shape))
    body = _FIXED.pack(
        MAGIC,
        SERDE_VERSION,
        dtype_by_name(chunk.dtype).code,
        len(chunk.shape),
        chunk.nbytes,
        xxhash.xxh3_64_intdigest(chunk.data),
    ) + _SHAPE.pack(*dims)
    return body + _TAIL.pack(xxhash.xxh32_intdigest(body), 0)


@dataclass(eq=False)
class Frame:
    """One chunk in framed form: ``buffer`` = header space + payload; ``chunk`` views the payload.

    A frame built by :func:`frame_copy` is *unsealed* until :meth:`seal`
    writes the header (checksum included); the cache seals lazily, only when
    the chunk actually goes to L2, so L1-only writes never pay for hashing.
    """

    buffer: Any
    """The owning buffer (numpy uint8 array or bytes) of ``HEADER_SIZE + payload`` bytes."""
    chunk: KVChunk
    """The payload, a view into ``buffer``."""
    sealed: bool = field(default=False)
    """True once the header bytes are valid."""
    recyclable: bool = field(default=False)
    """True if ``buffer`` is a writable array this library allocated (L1 may reuse it)."""
    leases: int = field(default=0)
    """Holders outside L1 (the L2 write queue); L1 never reuses a leased buffer."""

    @property
    def nbytes(self) -> int:
        """Bytes this frame occupies (header + payload): what tiers account for."""
        return HEADER_SIZE + self.chunk.nbytes

    def seal(self) -> memoryview:
        """Write the header if needed and return the whole frame as wire bytes."""
        view = memoryview(self.buffer).cast("B")
        if not self.sealed:
            # Idempotent: concurrent sealers write identical bytes.
            view[:HEADER_SIZE] = _pack_header(self.chunk)
            self.sealed = True
        return view


def frame_copy(chunk: KVChunk, into: np.ndarray | None = None) -> Frame:
    """Copy ``chunk`` into a frame (header unsealed): into ``into`` if given, else a new buffer.

    ``into`` must be a uint8 array of exactly ``HEADER_SIZE + chunk.nbytes``
    (a recycled L1 buffer: reusing it avoids page-faulting fresh memory).
    """
    size = HEADER_SIZE + chunk.nbytes
    if into is None:
        into = np.empty(size, dtype=np.uint8)
    elif into.nbytes != size or into.dtype != np.uint8:
        raise ValueError(f"buffer of {into.nbytes} bytes cannot hold a {size}-byte frame")
    payload = into[HEADER_SIZE:]
    np.copyto(payload, np.frombuffer(chunk.data, dtype=np.uint8))
    return Frame(into, KVChunk(chunk.dtype, chunk.shape, memoryview(payload.data)), recyclable=True)


def encode(dtype: str, shape: tuple[int, ...] | list[int], payload: Any) -> memoryview:
    """Frame ``payload`` (any C-contiguous buffer) as header + payload wire bytes."""
    return frame_copy(KVChunk.from_buffer(dtype, shape, payload)).seal()


def decode(buffer: Any) -> Frame:
    """Validate framed bytes and return a sealed :class:`Frame` viewing them (no copy).

    Raises :class:`CorruptEntryError` on any mismatch: truncation, bad magic,
    another version, bad checksum, unknown dtype, inconsistent shape.
    """
    view = memoryview(buffer).cast("B")
    if view.nbytes < HEADER_SIZE:
        raise CorruptEntryError(f"value of {view.nbytes} bytes is shorter than the header")
    magic, version, code, ndim, payload_len, payload_sum = _FIXED.unpack_from(view, 0)
    if magic != MAGIC:
        raise CorruptEntryError(f"bad magic {magic!r}")
    if version != SERDE_VERSION:
        raise CorruptEntryError(f"serde version {version}, this reader knows {SERDE_VERSION}")
    header_sum, reserved = _TAIL.unpack_from(view, _CHECK_AT)
    if xxhash.xxh32_intdigest(view[:_CHECK_AT]) != header_sum or reserved != 0:
        raise CorruptEntryError("header checksum mismatch")
    kv_dtype = BY_CODE.get(code)
    if kv_dtype is None or not 1 <= ndim <= MAX_NDIM:
        raise CorruptEntryError(f"unknown dtype code {code} or ndim {ndim}")
    shape = _SHAPE.unpack_from(view, _SHAPE_AT)[:ndim]
    if math.prod(shape) * kv_dtype.itemsize != payload_len:
        raise CorruptEntryError(f"shape {shape} does not match payload length {payload_len}")
    if view.nbytes != HEADER_SIZE + payload_len:
        raise CorruptEntryError(
            f"value has {view.nbytes} bytes, header says {HEADER_SIZE + payload_len}"
        )
    payload = view[HEADER_SIZE:]
    if xxhash.xxh3_64_intdigest(payload) != payload_sum:
        raise CorruptEntryError("payload checksum mismatch")
    return Frame(buffer, KVChunk(kv_dtype.name, tuple(shape), payload), sealed=True)
