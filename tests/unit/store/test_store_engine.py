from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmesh.store.config import MiB, StoreConfig
from kvmesh.store.engine import TieredStore
from kvmesh.store.protocol import MISS, PutResult


def key(i: int) -> bytes:
    return i.to_bytes(16, "big")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, disk: bool = True, clock: FakeClock | None = None) -> TieredStore:
    config = StoreConfig(
        port=0, memory_size_bytes=1 * MiB, disk_path=tmp_path / "disk" if disk else None,
        disk_size_bytes=4 * MiB, shm_dir=tmp_path, lease_ttl_s=10.0,
    )
    return TieredStore(config, clock or FakeClock())


def put(store: TieredStore, i: int, size: int = 256 * 1024) -> PutResult:
    target = store.begin_put(key(i), size)
    if isinstance(target, PutResult):
        return target
    store.receive_view(target)[:] = bytes([i]) * size
    return store.finish_put(key(i), target)


def get(store: TieredStore, i: int) -> bytes | None:
    found = store.get_pinned(key(i))
    if found is None:
        return None
    data = bytes(found.view)
    store.done([found])
    return data


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TieredStore]:
    s = make(tmp_path)
    yield s
    s.close()


def test_put_is_immutable_and_get_round_trips(store: TieredStore) -> None:
    assert put(store, 1) == PutResult.STORED
    assert put(store, 1) == PutResult.EXISTS
    assert get(store, 1) == b"\x01" * 256 * 1024
    assert get(store, 2) is None
    assert store.exists_prefix([key(1), key(2), key(1)]) == 1


def test_full_memory_demotes_lru_to_disk_and_disk_hit_promotes(store: TieredStore) -> None:
    for i in range(4):  # 4 x 256 KiB fill the 1 MiB memory tier
        put(store, i)
    put(store, 4)  # evicts key 0 (LRU) to disk
    assert store.memory.keys_lru_first() == [key(1), key(2), key(3), key(4)]
    assert store.disk is not None and list(store.disk._index) == [key(0)]
    assert store.counters.demotions == 1
    assert get(store, 0) == b"\x00" * 256 * 1024  # disk hit, promoted (evicts key 1)
    assert key(0) in store.memory and key(1) not in store.memory
    assert store.counters.promotions == 1
    assert store.counters.hits == {"memory": 0, "disk": 1}
    assert sorted(store.disk._index) == [key(0), key(1)]  # inclusive tiers: 0 keeps its file
    assert store.exists_prefix([key(i) for i in range(5)]) == 5


def test_disk_entries_survive_restart(tmp_path: Path) -> None:
    first = make(tmp_path)
    for i in range(6):
        put(first, i)
    first.close()
    second = make(tmp_path)
    try:
        assert second.exists_prefix([key(0), key(1), key(2)]) == 2  # only demoted ones persist
        assert get(second, 1) == b"\x01" * 256 * 1024
    finally:
        second.close()


def test_without_disk_full_memory_of_pinned_entries_rejects(tmp_path: Path) -> None:
    store = make(tmp_path, disk=False)
    try:
        for i in range(4):
            put(store, i)
        lease_id, rows = store.lease([key(i) for i in range(4)] + [key(9)])
        assert lease_id == 1 and rows[-1] == (0, MISS)
        assert put(store, 5) == PutResult.REJECTED
        assert store.release([lease_id, 12345]) == 1
        assert put(store, 5) == PutResult.STORED
        assert store.counters.rejected_puts == 1
    finally:
        store.close()


def test_lease_rows_point_at_value_bytes_and_expire(tmp_path: Path) -> None:
    clock = FakeClock()
    store = make(tmp_path, disk=False, clock=clock)
    try:
        put(store, 7, 100)
        lease_id, [(offset, length)] = store.lease([key(7)])
        assert length == 100
        assert bytes(store.arena.view[offset:offset + length]) == b"\x07" * 100
        assert store.delete([key(7)]) == 1
        assert store.memory.arena.allocator.used_bytes == 128  # still pinned by the lease
        clock.now += 9.9
        assert store.expire_leases() == 0
        clock.now += 0.1
        assert store.expire_leases() == 1
        assert store.memory.arena.allocator.used_bytes == 0
        assert store.stats()["leases_expired"] == 1
    finally:
        store.close()


def test_stats_shape(store: TieredStore) -> None:
    put(store, 1, 1000)
    get(store, 2)
    assert store.stats() == {
        "tiers": {
            "memory": {"entries": 1, "bytes": 1000, "capacity_bytes": 1 * MiB, "evictions": 0},
            "disk": {"entries": 0, "bytes": 0, "capacity_bytes": 4 * MiB, "evictions": 0,
                     "corrupt_dropped": 0},
        },
        "hits": {"memory": 0, "disk": 0}, "misses": 1, "demotions": 0, "promotions": 0,
        "rejected_puts": 0, "leases_active": 0, "leases_expired": 0,
    }
