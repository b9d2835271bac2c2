from __future__ import annotations

import pytest

from kvmesh.sim.prefix_cache import EnginePrefixCache


def _h(i: int) -> bytes:
    return i.to_bytes(16, "little")


def test_match_counts_the_leading_run_only() -> None:
    cache = EnginePrefixCache(capacity_tokens=64, block_size=4, chunk_size=8)
    cache.insert([_h(1), _h(2), _h(3)], [_h(100)])
    assert cache.match([_h(1), _h(2), _h(9), _h(3)]) == 2
    assert cache.match([_h(9), _h(1)]) == 0
    assert cache.cached_tokens == 12


def test_chunk_admitted_when_its_last_block_lands_and_evicted_with_any_block() -> None:
    cache = EnginePrefixCache(capacity_tokens=16, block_size=4, chunk_size=8)  # 4 blocks
    change = cache.insert([_h(1), _h(2), _h(3)], [_h(100)])
    assert (change.admitted, change.evicted) == ([_h(100)], [])
    change = cache.insert([_h(4), _h(5)], [_h(101)])  # needs 1 slot beyond capacity: evicts block 1
    assert (change.admitted, change.evicted) == ([_h(101)], [_h(100)])
    assert len(cache) == 4


def test_lru_order_follows_matches() -> None:
    cache = EnginePrefixCache(capacity_tokens=8, block_size=4, chunk_size=4)  # 2 blocks
    cache.insert([_h(1)], [_h(11)])
    cache.insert([_h(2)], [_h(12)])
    assert cache.match([_h(1)]) == 1  # 1 is now most recent
    change = cache.insert([_h(3)], [_h(13)])
    assert change.evicted == [_h(12)]
    assert cache.match([_h(1)]) == 1 and cache.match([_h(2)]) == 0


def test_clear_reports_full_chunks() -> None:
    cache = EnginePrefixCache(capacity_tokens=64, block_size=4, chunk_size=8)
    cache.insert([_h(1), _h(2), _h(3)], [_h(100)])
    assert cache.clear() == [_h(100)]
    assert len(cache) == 0


@pytest.mark.parametrize(("capacity", "block", "chunk"), [(64, 4, 6), (2, 4, 8), (64, 0, 8)])
def test_bad_geometry_raises(capacity: int, block: int, chunk: int) -> None:
    with pytest.raises(ValueError):
        EnginePrefixCache(capacity, block, chunk)
