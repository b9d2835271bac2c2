"""``KVChunk``: the KV of one chunk as typed raw bytes, shared without copies.

A chunk is whatever the engine hands over for ``chunk_size`` tokens (for
example ``[layers, 2, tokens, kv_heads, head_dim]``); the cache only needs its
element type, shape and bytes. ``data`` is a flat byte memoryview, so a chunk
can wrap an engine buffer, an L1 slab or a Redis reply without copying.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kvmesh.kvcache.dtypes import dtype_by_name

MAX_NDIM = 8
"""Most dimensions a chunk may have (fixed by the serde header)."""


@dataclass(frozen=True)
class KVChunk:
    """The KV of one chunk. Immutable: readers may share ``data``."""

    dtype: str
    """Element type name from :mod:`kvmesh.kvcache.dtypes` (``"bfloat16"``...)."""
    shape: tuple[int, ...]
    """Dimensions, outermost first."""
    data: memoryview
    """The raw elements, C order, as a flat unsigned-byte view."""

    def __post_init__(self) -> None:
        kv_dtype = dtype_by_name(self.dtype)
        if not 1 <= len(self.shape) <= MAX_NDIM or any(d < 0 or d >= 2**32 for d in self.shape):
            raise ValueError(f"shape must have 1..{MAX_NDIM} dims in [0, 2**32), got {self.shape}")
        expected = math.prod(self.shape) * kv_dtype.itemsize
        if self.data.nbytes != expected:
            raise ValueError(
                f"{self.dtype}{list(self.shape)} needs {expected} bytes, "
                f"buffer has {self.data.nbytes}"
            )

    @property
    def nbytes(self) -> int:
        """Payload size in bytes."""
        return self.data.nbytes

    @classmethod
    def from_buffer(cls, dtype: str, shape: tuple[int, ...] | list[int], buffer: Any) -> KVChunk:
        """Wrap any C-contiguous buffer (bytes, bytearray, numpy array...) without copying."""
        view = memoryview(buffer)
        if not view.c_contiguous:
            raise ValueError("KV chunk buffer must be C-contiguous")
        return cls(dtype_by_name(dtype).name, tuple(int(d) for d in shape), view.cast("B"))

    @classmethod
    def from_array(cls, array: np.ndarray, dtype: str | None = None) -> KVChunk:
        """Wrap a numpy array; ``dtype`` overrides its name (bf16 arrives as uint16 views)."""
        name = dtype if dtype is not None else array.dtype.name
        if not array.flags.c_contiguous:
            raise ValueError("KV chunk array must be C-contiguous")
        return cls.from_buffer(name, array.shape, array.reshape(-1).view(np.uint8))

    def as_numpy(self) -> np.ndarray:
        """A zero-copy numpy view with ``shape``; bf16/fp8 appear as same-width integers."""
        view_dtype = dtype_by_name(self.dtype).view
        return np.frombuffer(self.data, dtype=view_dtype).reshape(self.shape)

    def copy(self) -> KVChunk:
        """A chunk with its own copy of the bytes (safe after the source is released)."""
        return KVChunk(self.dtype, self.shape, memoryview(bytearray(self.data)))
