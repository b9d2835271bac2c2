"""Human-readable sizes and durations for flags and config ("4GiB", "500ms")."""

from __future__ import annotations

import re

_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1 << 10,
    "m": 1000**2, "mb": 1000**2, "mib": 1 << 20,
    "g": 1000**3, "gb": 1000**3, "gib": 1 << 30,
    "t": 1000**4, "tb": 1000**4, "tib": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

_DURATION_UNITS: dict[str, float] = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*$")


def parse_size(text: str | int) -> int:
    """Parse ``"4GiB"``, ``"512MiB"``, ``"2MB"`` or a plain byte count into bytes.

    Raises ``ValueError`` naming the text on anything else.
    """
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must be >= 0, got {text}")
        return text
    match = _SIZE_RE.match(text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size {text!r} (examples: 4GiB, 512MiB, 1048576)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_size_list(text: str) -> list[int]:
    """Parse a comma-separated list of sizes: ``"2MiB,32MiB"``."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"invalid size list {text!r}")
    return [parse_size(p) for p in parts]


def parse_duration_s(text: str | float) -> float:
    """Parse ``"500ms"``, ``"2s"``, ``"1.5"`` (seconds) into seconds."""
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"duration must be >= 0, got {text}")
        return float(text)
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"invalid duration {text!r} (examples: 500ms, 2s, 1.5)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def format_size(num_bytes: int) -> str:
    """Format bytes with a binary unit: ``format_size(2 << 20) == "2MiB"``."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if num_bytes >= scale and num_bytes % scale == 0:
            return f"{num_bytes // scale}{unit}"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f}{unit}"
    return f"{num_bytes}B"
