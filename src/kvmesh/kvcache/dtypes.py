"""Element types a KV chunk may hold, with their fixed wire codes.

The serde header stores a one-byte code instead of the name, so the table
below is part of the wire format: a code is never reused or renumbered, new
types only append. numpy has no bfloat16 or float8, so each type also names
the same-width unsigned integer numpy views its raw bytes as; the cache never
does arithmetic on KV, it only moves bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KVDType:
    """One element type of the code table."""

    name: str
    """Canonical name, as torch spells it without the ``torch.`` prefix."""
    code: int
    """Wire code in the serde header (u8, never reused)."""
    itemsize: int
    """Bytes per element."""
    view: np.dtype
    """numpy dtype with the same width, used to view raw bytes without a copy."""


def _entry(name: str, code: int, view: str) -> KVDType:
    dt = np.dtype(view)
    return KVDType(name, code, dt.itemsize, dt)


_TABLE: tuple[KVDType, ...] = (
    _entry("bfloat16", 1, "<u2"),
    _entry("float16", 2, "<f2"),
    _entry("float32", 3, "<f4"),
    _entry("float8_e4m3fn", 4, "u1"),
    _entry("float8_e5m2", 5, "u1"),
    _entry("uint8", 6, "u1"),
    _entry("int8", 7, "i1"),
    _entry("float64", 8, "<f8"),
    _entry("int16", 9, "<i2"),
    _entry("int32", 10, "<i4"),
    _entry("uint16", 11, "<u2"),
)

BY_NAME: dict[str, KVDType] = {d.name: d for d in _TABLE}
"""Name -> type."""
BY_CODE: dict[int, KVDType] = {d.code: d for d in _TABLE}
"""Wire code -> type."""


def dtype_by_name(name: str) -> KVDType:
    """The type called ``name`` (``"torch.bfloat16"`` works too); ``ValueError`` if unknown."""
    found = BY_NAME.get(name.removeprefix("torch."))
    if found is None:
        raise ValueError(f"unknown KV dtype {name!r}; known: {sorted(BY_NAME)}")
    return found
