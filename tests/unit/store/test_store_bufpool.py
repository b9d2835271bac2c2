from __future__ import annotations

import gc
import threading

import pytest

from kvmesh.store.bufpool import BufferPool


def test_buffers_return_to_the_pool_when_dropped() -> None:
    pool = BufferPool(1024)
    a = pool.take(100)
    b = pool.take(200)
    assert (a.nbytes, b.nbytes, pool.used_bytes) == (100, 200, 128 + 256)
    a[:] = b"x" * 100
    view = a[10:20]  # a slice keeps the buffer lent out
    del a
    gc.collect()
    assert pool.used_bytes == 128 + 256 and bytes(view) == b"x" * 10
    del view, b
    assert pool.used_bytes == 0


def test_full_pool_falls_back_to_fresh_memory() -> None:
    pool = BufferPool(256)
    held = pool.take(256)
    extra = pool.take(10)
    assert (extra.nbytes, pool.fallbacks, pool.used_bytes) == (10, 1, 256)
    del held, extra
    assert pool.used_bytes == 0
    assert BufferPool(0).take(5).nbytes == 5


def test_release_from_another_thread() -> None:
    pool = BufferPool(4096)
    bufs = [pool.take(64) for _ in range(8)]
    thread = threading.Thread(target=bufs.clear)
    thread.start()
    thread.join()
    assert pool.used_bytes == 0
    with pytest.raises(ValueError, match="capacity_bytes"):
        BufferPool(-1)
