from __future__ import annotations

from pathlib import Path

import pytest

from kvmesh.store.shm import (
    DATA_OFFSET,
    FirstFitAllocator,
    ShmArena,
    ShmReader,
    reap_stale_segments,
)


def test_allocator_first_fit_and_coalescing() -> None:
    alloc = FirstFitAllocator(0, 1024)
    a, b, c = alloc.alloc(100), alloc.alloc(64), alloc.alloc(200)
    assert (a, b, c) == (0, 128, 192)  # 100 rounds up to 128 (64-byte alignment)
    assert alloc.used_bytes == 128 + 64 + 256
    alloc.free(b, 64)
    assert alloc.free_blocks() == [(128, 64), (448, 576)]
    assert alloc.alloc(64) == 128  # first fit reuses the hole
    alloc.free(128, 64)
    alloc.free(a, 100)  # merges with the hole on its right
    assert alloc.free_blocks() == [(0, 192), (448, 576)]
    alloc.free(c, 200)  # merges left and right into one block
    assert alloc.free_blocks() == [(0, 1024)]
    assert alloc.used_bytes == 0


def test_allocator_returns_none_when_no_block_fits() -> None:
    alloc = FirstFitAllocator(0, 256)
    assert alloc.alloc(128) == 0
    assert alloc.alloc(128) == 128
    assert alloc.alloc(1) is None
    alloc.free(0, 128)
    assert alloc.alloc(129) is None  # only 128 contiguous bytes are free


def test_reader_sees_server_bytes_and_checks_nonce(tmp_path: Path) -> None:
    arena = ShmArena(tmp_path, 1 << 20)
    try:
        offset = arena.allocator.alloc(5)
        assert offset == DATA_OFFSET
        arena.slice(offset, 5)[:] = b"hello"
        reader = ShmReader(str(arena.path), arena.size, arena.nonce)
        assert bytes(reader.view[offset:offset + 5]) == b"hello"
        reader.close()
        with pytest.raises(ValueError, match="nonce"):
            ShmReader(str(arena.path), arena.size, bytes(16))
        with pytest.raises(ValueError, match="size"):
            ShmReader(str(arena.path), arena.size + 1, arena.nonce)
    finally:
        arena.close()
    assert not arena.path.exists()


def test_segments_of_dead_processes_are_reaped(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f"kvmesh-store-9200-{dead.stdout.strip()}-abcd1234"
    stale.write_bytes(b"x")
    live = ShmArena(tmp_path, 1 << 20)
    other = tmp_path / "kvmesh-not-a-pid-here"
    other.write_bytes(b"x")
    try:
        assert reap_stale_segments(tmp_path) == [stale]
        assert live.path.exists() and other.exists() and not stale.exists()
    finally:
        live.close()
