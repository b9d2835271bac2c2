from __future__ import annotations

import pytest

from kvmesh.store.leases import LeaseTable


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_release_returns_items_once() -> None:
    table: LeaseTable[str] = LeaseTable(10.0, FakeClock())
    lease = table.grant(["a", "b"])
    assert lease == 1
    assert table.release(lease) == ["a", "b"]
    assert table.release(lease) is None
    assert table.release(999) is None


def test_leases_expire_in_deadline_order() -> None:
    clock = FakeClock()
    table: LeaseTable[str] = LeaseTable(10.0, clock)
    first = table.grant(["a"])
    clock.now += 5
    table.grant(["b"])
    clock.now += 5  # first is exactly at its deadline
    assert table.expire() == [["a"]]
    assert table.release(first) is None
    assert len(table) == 1
    clock.now += 5
    assert table.expire() == [["b"]]
    assert table.expired_total == 2


def test_drain_and_validation() -> None:
    table: LeaseTable[int] = LeaseTable(1.0, FakeClock())
    table.grant([1])
    table.grant([2])
    assert table.drain() == [[1], [2]]
    assert len(table) == 0
    with pytest.raises(ValueError, match="ttl_s"):
        LeaseTable(0)
