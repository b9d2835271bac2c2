from __future__ import annotations

import pytest

from kvmesh.common.kv_events import EventKind, KVEvent, KVEventBatch, Tier, admitted, evicted
from kvmesh.router.kv_index import ENTRY_OVERHEAD_BYTES, HOLDER_OVERHEAD_BYTES, KVIndex, best_tier

H = [bytes([i]) * 16 for i in range(6)]


def _batch(src: str, *events: KVEvent) -> KVEventBatch:
    return KVEventBatch(src, "m", 4, 1, 0, list(events))


def test_admit_evict_and_contiguous_lookup() -> None:
    idx = KVIndex()
    idx.apply(_batch("A", admitted(Tier.ENGINE, H[:3]), admitted(Tier.L1, H[:1])))
    idx.apply(_batch("B", admitted(Tier.L2, H[:2])))
    assert idx.lookup(H[:4]) == [{"A": 3, "B": 4}, {"A": 1, "B": 4}, {"A": 1}]
    idx.apply(_batch("A", evicted(Tier.ENGINE, H[:2])))
    assert idx.lookup(H[:4]) == [{"A": 2, "B": 4}, {"B": 4}, {"A": 1}]
    assert len(idx) == 3
    assert idx.num_bytes == 3 * ENTRY_OVERHEAD_BYTES + 4 * HOLDER_OVERHEAD_BYTES


def test_lookup_stops_at_first_unheld_chunk() -> None:
    idx = KVIndex()
    idx.apply(_batch("A", admitted(Tier.ENGINE, [H[0], H[2]])))
    assert idx.lookup(H[:3]) == [{"A": 1}]


def test_cleared_tier_and_clear_source() -> None:
    idx = KVIndex()
    idx.apply(_batch("A", admitted(Tier.ENGINE, H[:2]), admitted(Tier.L1, H[:1])))
    idx.apply(_batch("A", KVEvent(EventKind.CLEARED, Tier.ENGINE)))
    assert idx.lookup(H[:2]) == [{"A": 2}]
    idx.clear_source("A")
    assert (len(idx), idx.num_bytes) == (0, 0)


def test_bounded_by_max_entries_lru() -> None:
    idx = KVIndex(max_entries=3)
    idx.apply(_batch("A", admitted(Tier.ENGINE, H[:3])))
    assert idx.lookup(H[:1]) == [{"A": 1}]  # touch H0: H1 is now the oldest
    idx.apply(_batch("A", admitted(Tier.ENGINE, [H[4]])))
    assert (len(idx), idx.evicted_entries) == (3, 1)
    assert idx.lookup([H[1]]) == []
    assert idx.lookup([H[0], H[2], H[4]]) == [{"A": 1}] * 3


def test_best_tier_order_and_validation() -> None:
    assert [best_tier(b) for b in (1, 2, 4, 6, 7, 0)] == [Tier.ENGINE, Tier.L1, Tier.L2, Tier.L1, Tier.ENGINE, None]
    with pytest.raises(ValueError):
        KVIndex(max_entries=0)
