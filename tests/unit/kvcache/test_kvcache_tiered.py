"""TieredKVCache over the in-process memory:// L2: tier flow, deadlines, breaker, drops, events."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from kvmesh.common.errors import TransportError
from kvmesh.common.hashing import ChainSpec, KVLayout, RequestExtras, storage_key
from kvmesh.common.kv_events import EventKind, KVEvent, Tier
from kvmesh.common.procs import wait_until
from kvmesh.kvcache import CacheConfig, KVChunk, LookupResult, TieredKVCache
from kvmesh.kvcache.l2.memory_backend import MemoryL2Backend
from kvmesh.kvcache.l2.registry import create_l2_backend
from kvmesh.kvcache.serde import HEADER_SIZE, encode

CS = 4
SPEC = ChainSpec("unit-model", chunk_size=CS)
LAYOUT = KVLayout("bfloat16", num_layers=2, num_kv_heads=2, head_dim=4)
SHAPE = (2, 2, CS, 2, 4)  # layers, K/V, tokens, heads, head_dim
CHUNK_BYTES = 2 * 2 * CS * 2 * 4 * 2
TOKENS = list(range(8 * CS))
NO = RequestExtras()


def chunk(i: int) -> KVChunk:
    return KVChunk.from_array(np.full(SHAPE, i, dtype=np.uint16), "bfloat16")


def values(chunks: list[KVChunk]) -> list[int]:
    return [int(c.as_numpy().flat[0]) for c in chunks]


def make(
    l2: MemoryL2Backend | None, events: list[KVEvent] | None = None, **cfg: object
) -> TieredKVCache:
    size = cfg.pop("l1_size_bytes", 1 << 20)
    # Generous unless a test is about deadlines: a loaded CI machine must not turn hits into misses.
    cfg.setdefault("l2_deadline_s", 5.0)
    config = CacheConfig(chunk_size=CS, l1_size_bytes=size, **cfg)  # type: ignore[arg-type]
    return TieredKVCache(
        config, SPEC, LAYOUT, l2=l2, on_event=events.append if events is not None else None
    )


@pytest.fixture
def l2() -> MemoryL2Backend:
    return MemoryL2Backend()


@pytest.fixture
def hashes() -> list[bytes]:
    return TieredKVCache.chain_hashes(make(None), TOKENS)


@pytest.fixture
def cache(l2: MemoryL2Backend) -> Iterator[TieredKVCache]:
    c = make(l2, l2_breaker_reset_s=0.02)
    yield c
    c.close()


def key(h: bytes) -> bytes:
    return storage_key(h, LAYOUT, SPEC.seed)


def test_store_writes_l1_now_and_l2_after_flush(cache: TieredKVCache, l2: MemoryL2Backend) -> None:
    assert cache.store(TOKENS, NO, [chunk(0), chunk(1), chunk(2)]) == 3
    assert cache.lookup_hashes(cache.chain_hashes(TOKENS)) == LookupResult(3, 0)
    assert cache.flush(5.0)
    assert len(l2) == 3
    stats = cache.stats()
    assert (stats["l1_written_bytes"], stats["l2_written_bytes"]) == (
        3 * CHUNK_BYTES,
        3 * CHUNK_BYTES,
    )
    assert stats["l1_used_bytes"] == 3 * (CHUNK_BYTES + HEADER_SIZE) and stats["l1_entries"] == 3


def test_lookup_counts_only_the_contiguous_prefix_l1_then_l2(
    hashes: list[bytes], l2: MemoryL2Backend
) -> None:
    writer = make(l2)
    writer.store_hashes([hashes[i] for i in (0, 1, 2, 3, 5)], [chunk(i) for i in (0, 1, 2, 3, 5)])
    assert writer.flush(5.0)
    writer.close()
    reader = make(l2)
    reader.store_hashes(hashes[:2], [chunk(0), chunk(1)])  # L1 holds 0,1; L2 holds 0-3 and 5
    assert reader.lookup_hashes(hashes) == LookupResult(l1_chunks=2, l2_chunks=2)
    assert reader.lookup(TOKENS) == 4 * CS
    stats = reader.stats()
    assert (stats["lookups"], stats["lookup_tokens"]) == (2, 16 * CS)
    assert (stats["l1_hit_tokens"], stats["l2_hit_tokens"]) == (4 * CS, 4 * CS)
    with reader.read(hashes) as got:
        assert values(got) == [0, 1, 2, 3]
    # the L2 hits were promoted: now all four are L1 hits
    assert reader.lookup_hashes(hashes) == LookupResult(4, 0)
    assert (reader.stats()["l1_read_bytes"], reader.stats()["l2_read_bytes"]) == (
        2 * CHUNK_BYTES,
        2 * CHUNK_BYTES,
    )
    reader.close()


def test_l1_gap_is_filled_from_l2_but_nothing_after_a_double_gap(
    hashes: list[bytes], l2: MemoryL2Backend
) -> None:
    c = make(l2)
    c.store_hashes([hashes[1]], [chunk(1)])
    assert c.flush(5.0)
    c.l1.clear()
    c.store_hashes(
        [hashes[0], hashes[2]], [chunk(0), chunk(2)]
    )  # L1: 0, 2; L2: 1 (and 0, 2 queued)
    assert c.flush(5.0)
    assert c.lookup_hashes(hashes) == LookupResult(1, 2)
    with c.read(hashes) as got:
        assert values(got) == [0, 1, 2]
    c.close()


def test_load_returns_owned_copies(cache: TieredKVCache) -> None:
    cache.store(TOKENS, NO, [np.full(SHAPE, 7, dtype=np.uint16)], start_chunk=0)
    loaded = cache.load(TOKENS)
    cache.l1.clear()
    assert [c.dtype for c in loaded] == ["uint16"] and values(loaded) == [7]


def test_store_with_start_chunk_and_misuse(cache: TieredKVCache, hashes: list[bytes]) -> None:
    assert cache.store(TOKENS, NO, [chunk(2), chunk(3)], start_chunk=2) == 2
    assert cache.lookup_hashes(hashes) == LookupResult(0, 0)  # chunk 0 is missing: no prefix
    assert cache.l1.exists_prefix([key(hashes[2]), key(hashes[3])]) == 2
    with pytest.raises(ValueError, match="need 9 full chunks of tokens, got 8"):
        cache.store(TOKENS, NO, [chunk(0), chunk(1)], start_chunk=7)
    with pytest.raises(ValueError, match="2 chain hashes for 1 chunks"):
        cache.store_hashes(hashes[:2], [chunk(0)])
    with pytest.raises(ValueError, match="start_chunk must be >= 0"):
        cache.store(TOKENS, NO, [], start_chunk=-1)
    with pytest.raises(ValueError, match="config.chunk_size=256 != spec.chunk_size=4"):
        TieredKVCache(CacheConfig(), SPEC, LAYOUT)


def test_extras_isolate_tenants(cache: TieredKVCache) -> None:
    cache.store(TOKENS, RequestExtras(cache_salt="a"), [chunk(0)])
    assert cache.lookup(TOKENS, RequestExtras(cache_salt="a")) == CS
    assert cache.lookup(TOKENS, RequestExtras(cache_salt="b")) == 0
    assert cache.lookup(TOKENS) == 0


def test_events_carry_chain_hashes_per_tier(l2: MemoryL2Backend, hashes: list[bytes]) -> None:
    events: list[KVEvent] = []
    entry = CHUNK_BYTES + HEADER_SIZE
    c = make(l2, events, l1_size_bytes=2 * entry)
    c.store_hashes(hashes[:3], [chunk(0), chunk(1), chunk(2)])
    assert c.flush(5.0)
    c.close()
    l1_events = [e for e in events if e.tier is Tier.L1]
    assert l1_events == [
        KVEvent(EventKind.EVICTED, Tier.L1, (hashes[0],)),
        KVEvent(EventKind.ADMITTED, Tier.L1, tuple(hashes[:3])),
    ]
    admitted_l2 = [h for e in events if e.tier is Tier.L2 for h in e.chain_hashes]
    assert admitted_l2 == hashes[:3] and all(
        e.kind is EventKind.ADMITTED for e in events if e.tier is Tier.L2
    )
    assert c.stats()["l1_evictions"] == 1


def test_prometheus_metrics_on_the_given_registry(l2: MemoryL2Backend) -> None:
    registry = CollectorRegistry()
    c = TieredKVCache(
        CacheConfig(chunk_size=CS, l1_size_bytes=1 << 20), SPEC, LAYOUT, registry=registry, l2=l2
    )
    c.store(TOKENS, NO, [chunk(0)])
    c.lookup(TOKENS)
    assert c.flush(5.0)
    get = registry.get_sample_value
    assert get("kvmesh_cache_lookups_total") == 1
    assert get("kvmesh_cache_hit_tokens_total", {"tier": "l1"}) == CS
    assert get("kvmesh_cache_written_bytes_total", {"tier": "l2"}) == CHUNK_BYTES
    assert get("kvmesh_cache_l1_used_bytes") == CHUNK_BYTES + HEADER_SIZE
    assert get("kvmesh_cache_l1_entries") == 1
    assert get("kvmesh_cache_l1_capacity_bytes") == 1 << 20
    assert get("kvmesh_cache_l2_breaker_state") == 0
    assert get("kvmesh_cache_op_latency_seconds_count", {"op": "lookup"}) == 1
    assert get("kvmesh_cache_op_latency_seconds_count", {"op": "l2_put"}) == 1
    c.close()


def test_slow_l2_past_deadline_is_a_counted_miss(l2: MemoryL2Backend, hashes: list[bytes]) -> None:
    seed = make(l2)
    seed.store_hashes(hashes[:2], [chunk(0), chunk(1)])
    assert seed.flush(5.0)
    seed.close()
    c = make(l2, l2_deadline_s=0.02)
    l2.delay_s = 2.0
    started = time.monotonic()
    assert c.lookup_hashes(hashes) == LookupResult(0, 0)
    with c.read(hashes) as got:
        assert got == []
    assert time.monotonic() - started < 1.0  # two deadlines, not two 2 s stalls
    stats = c.stats()
    assert (stats["l2_timeouts"], stats["l2_errors"]) == (2, 0)
    l2.delay_s = 0.0
    c.close()


def test_failing_l2_opens_breaker_then_probe_reconnects(
    cache: TieredKVCache, l2: MemoryL2Backend, hashes: list[bytes]
) -> None:
    cache.store_hashes(hashes[:1], [chunk(0)])
    assert cache.flush(5.0)
    cache.l1.clear()
    l2.fail_with = TransportError("connection refused")
    for _ in range(3):  # threshold 3
        assert cache.lookup_hashes(hashes) == LookupResult(0, 0)
    assert not cache.l2_available and cache.stats()["l2_errors"] == 3
    # open: writes are dropped and counted, nothing raises (skipped calls: next test)
    assert cache.lookup_hashes(hashes) == LookupResult(0, 0)
    assert cache.store_hashes(hashes[1:2], [chunk(1)]) == 1
    stats = cache.stats()
    assert stats["l2_dropped_writes_breaker_open"] == 1 and stats["l2_breaker_opened"] == 1
    l2.fail_with = None
    wait_until(lambda: cache.l2_available, 5.0, "L2 reconnect")
    assert cache.stats()["l2_reconnects"] >= 1
    cache.l1.clear()
    assert cache.lookup_hashes(hashes) == LookupResult(0, 1)


def test_open_breaker_skips_backend_calls(l2: MemoryL2Backend, hashes: list[bytes]) -> None:
    c = make(l2, l2_breaker_failure_threshold=1, l2_breaker_reset_s=60.0)
    l2.fail_with = TransportError("down")
    c.lookup_hashes(hashes)
    calls = dict(l2.calls)
    for _ in range(5):
        assert c.lookup_hashes(hashes) == LookupResult(0, 0)
        with c.read(hashes) as got:
            assert got == []
    assert l2.calls == calls
    assert c.stats()["l2_skipped"] == 10
    c.close()


def test_unexpected_backend_exception_never_reaches_the_caller(
    l2: MemoryL2Backend, hashes: list[bytes]
) -> None:
    c = make(l2)
    l2.fail_with = RuntimeError("a bug in a plugin backend")
    assert c.lookup_hashes(hashes) == LookupResult(0, 0)
    assert c.stats()["l2_errors"] == 1
    c.close()


def test_full_write_queue_drops_and_never_blocks(l2: MemoryL2Backend, hashes: list[bytes]) -> None:
    c = make(l2, l2_write_queue_chunks=2, l2_write_batch_chunks=1, l2_deadline_s=5.0)
    l2.delay_s = 0.2
    assert c.store_hashes(hashes[:5], [chunk(i) for i in range(5)]) == 5  # all five in L1
    stats = c.stats()
    assert stats["l2_dropped_writes_queue_full"] == 3 and stats["l2_dropped_writes"] == 3
    assert c.flush(5.0)
    assert len(l2) == 2 and c.stats()["l2_pending_writes"] == 0
    c.close()


@pytest.mark.parametrize(
    "bad",
    [
        lambda good: good[:-1],  # truncated
        lambda good: good[:70] + bytes([good[70] ^ 1]) + good[71:],  # flipped payload bit
        lambda good: b"\x00" * len(good),  # garbage
    ],
    ids=["truncated", "bitflip", "garbage"],
)
def test_corrupt_l2_value_is_a_counted_miss_and_is_discarded(
    l2: MemoryL2Backend, hashes: list[bytes], bad
) -> None:
    good = bytes(encode("bfloat16", SHAPE, np.full(SHAPE, 1, dtype=np.uint16)))
    l2.plant(key(hashes[0]), bytes(encode("bfloat16", SHAPE, np.zeros(SHAPE, dtype=np.uint16))))
    l2.plant(key(hashes[1]), bad(good))
    l2.plant(key(hashes[2]), bytes(encode("bfloat16", SHAPE, np.full(SHAPE, 2, dtype=np.uint16))))
    c = make(l2)
    assert c.lookup_hashes(hashes) == LookupResult(0, 3)  # existence cannot see corruption
    with c.read(hashes) as got:
        assert values(got) == [0]  # the run stops at the corrupt value
    assert c.stats()["l2_corrupt_entries"] == 1
    wait_until(lambda: l2.raw(key(hashes[1])) is None, 5.0, "corrupt value discarded")
    c.store_hashes(hashes[1:2], [chunk(1)])  # a good rewrite now lands
    assert c.flush(5.0)
    c.l1.clear()
    with c.read(hashes) as got:
        assert values(got) == [0, 1, 2]
    c.close()


def test_min_l2_hit_chunks_skips_tiny_hits(l2: MemoryL2Backend, hashes: list[bytes]) -> None:
    l2.plant(key(hashes[0]), bytes(encode("bfloat16", SHAPE, np.zeros(SHAPE, dtype=np.uint16))))
    c = make(l2, l2_min_hit_chunks=2)
    assert c.lookup_hashes(hashes) == LookupResult(0, 0)
    c.close()


def test_l1_disabled_serves_from_l2_without_promotion(
    l2: MemoryL2Backend, hashes: list[bytes]
) -> None:
    c = make(l2, l1_size_bytes=0)
    assert c.store_hashes(hashes[:2], [chunk(0), chunk(1)]) == 0
    assert c.flush(5.0)
    with c.read(hashes) as got:
        assert values(got) == [0, 1]
    assert c.l1.num_entries == 0 and c.stats()["l1_rejected_writes"] == 0
    c.close()


def test_l2_chunks_stay_valid_when_l1_cannot_hold_them(
    l2: MemoryL2Backend, hashes: list[bytes]
) -> None:
    seed = make(l2)
    seed.store_hashes(hashes[:3], [chunk(0), chunk(1), chunk(2)])
    assert seed.flush(5.0)
    seed.close()
    c = make(l2, l1_size_bytes=CHUNK_BYTES + HEADER_SIZE)  # room for one
    with c.read(hashes) as got:
        assert values(got) == [0, 1, 2]
        assert c.l1.num_entries == 1
    c.close()


def test_close_is_idempotent_and_l1_keeps_serving(
    cache: TieredKVCache, hashes: list[bytes]
) -> None:
    cache.store_hashes(hashes[:1], [chunk(0)])
    cache.close()
    cache.close()
    assert cache.lookup_hashes(hashes) == LookupResult(1, 0)
    assert cache.store_hashes(hashes[1:2], [chunk(1)]) == 1
    assert cache.stats()["l2_dropped_writes_closed"] >= 1


def test_memory_url_from_the_registry() -> None:
    backend = create_l2_backend("memory://?max_bytes=1KiB")
    assert isinstance(backend, MemoryL2Backend) and backend.max_bytes == 1024
    with pytest.raises(ValueError, match="memory L2 URL takes only"):
        create_l2_backend("memory://host/path")
    c = TieredKVCache(CacheConfig(chunk_size=CS, l2_url="memory://"), SPEC, LAYOUT)
    assert c.l2_available
    c.close()


def test_frames_queued_for_l2_are_not_recycled_by_l1(
    l2: MemoryL2Backend, hashes: list[bytes]
) -> None:
    # L1 holds one chunk; each store evicts the previous one while its L2 write is still queued.
    c = make(
        l2, l1_size_bytes=CHUNK_BYTES + HEADER_SIZE, l2_deadline_s=5.0, l2_write_batch_chunks=1
    )
    l2.delay_s = 0.05
    for i in range(4):
        assert c.store_hashes(hashes[i : i + 1], [chunk(10 + i)]) == 1
    assert c.flush(10.0)
    l2.delay_s = 0.0
    c.l1.clear()
    with c.read(hashes[:4]) as got:
        assert values(got) == [10, 11, 12, 13]
    c.close()


def test_close_racing_an_in_flight_l2_call_raises_nothing(
    l2: MemoryL2Backend, hashes: list[bytes]
) -> None:
    import threading

    c = make(l2)
    l2.delay_s = 0.5
    results: list[object] = []
    caller = threading.Thread(target=lambda: results.append(c.lookup_hashes(hashes)))
    caller.start()
    wait_until(lambda: l2.calls["exists_prefix"] == 1, 5.0, "the lookup reached L2")
    c.close()
    caller.join(timeout=10.0)
    assert results == [LookupResult(0, 0)]
