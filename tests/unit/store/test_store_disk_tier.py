from __future__ import annotations

import os
from pathlib import Path

from kvmesh.store.disk_tier import FILE_HEADER, DiskTier


def key(i: int) -> bytes:
    return i.to_bytes(16, "big")


def read(tier: DiskTier, k: bytes) -> bytes | None:
    length = tier.length(k)
    if length is None:
        return None
    buf = bytearray(length)
    return bytes(buf) if tier.read_into(k, memoryview(buf)) else None


def test_put_read_and_restart(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, 1 << 20)
    assert tier.put(key(1), b"alpha") and tier.put(key(2), b"beta")
    assert tier.put(key(1), b"ignored") is True  # immutable: first write wins
    assert read(tier, key(1)) == b"alpha"
    assert tier.path_of(key(1)) == tmp_path / "00" / f"{key(1).hex()}.kv"
    reopened = DiskTier(tmp_path, 1 << 20)
    assert (len(reopened), reopened.bytes_stored) == (2, 2 * FILE_HEADER.size + 9)
    assert read(reopened, key(1)) == b"alpha" and read(reopened, key(2)) == b"beta"


def test_restart_drops_corrupt_short_and_temp_files(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, 1 << 20)
    for i in range(4):
        tier.put(key(i), bytes([i]) * 100)
    flipped = tier.path_of(key(1))
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0xFF
    flipped.write_bytes(bytes(data))
    short = tier.path_of(key(2))
    short.write_bytes(short.read_bytes()[:-10])
    (tmp_path / "00" / "leftover.tmp").write_bytes(b"partial")
    reopened = DiskTier(tmp_path, 1 << 20)
    assert sorted(reopened._index) == [key(0), key(3)]
    assert reopened.corrupt_dropped == 2
    assert not flipped.exists() and not short.exists()
    assert not (tmp_path / "00" / "leftover.tmp").exists()


def test_corruption_after_start_is_caught_on_read(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, 1 << 20)
    tier.put(key(1), b"x" * 64)
    path = tier.path_of(key(1))
    data = bytearray(path.read_bytes())
    data[FILE_HEADER.size] ^= 1
    path.write_bytes(bytes(data))
    assert read(tier, key(1)) is None
    assert key(1) not in tier and not path.exists() and tier.corrupt_dropped == 1


def test_budget_evicts_least_recently_used(tmp_path: Path) -> None:
    size = FILE_HEADER.size + 100
    tier = DiskTier(tmp_path, 3 * size)
    for i in range(3):
        tier.put(key(i), b"v" * 100)
    assert tier.length(key(0)) == 100  # touch 0
    tier.put(key(3), b"v" * 100)
    assert sorted(tier._index) == [key(0), key(2), key(3)]
    assert tier.evictions == 1 and tier.bytes_stored == 3 * size
    assert tier.put(key(9), b"v" * (3 * size)) is False  # can never fit


def test_restart_keeps_lru_order_by_mtime(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, 1 << 20)
    for i in range(3):
        tier.put(key(i), b"v")
        os.utime(tier.path_of(key(i)), (1000 + 10 * (2 - i), 1000 + 10 * (2 - i)))
    assert list(DiskTier(tmp_path, 1 << 20)._index) == [key(2), key(1), key(0)]
