"""KV reuse never changes the answer: whatever the cache returns is exactly what was stored.

Every stored chunk's bytes are derived from its chain hash, so any chunk a
read returns can be checked against the hash it was asked for, whatever
evictions, promotions, recycling and L2 round trips happened in between.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmesh.common.hashing import ChainSpec, KVLayout
from kvmesh.kvcache import CacheConfig, KVChunk, TieredKVCache
from kvmesh.kvcache.l2.memory_backend import MemoryL2Backend
from kvmesh.kvcache.serde import HEADER_SIZE

CS = 4
SPEC = ChainSpec("consistency", chunk_size=CS)
LAYOUT = KVLayout("bfloat16", 1, 1, 8)
SHAPE = (2, CS, 8)
ENTRY = 2 * CS * 8 * 2 + HEADER_SIZE


def content(chain_hash: bytes) -> KVChunk:
    raw = hashlib.shake_128(chain_hash).digest(2 * CS * 8 * 2)
    return KVChunk.from_buffer("bfloat16", SHAPE, raw)


def prompts() -> list[list[int]]:
    # Shared prefixes: prompt p shares its first p chunks with prompt 0.
    base = list(range(8 * CS))
    return [base[: p * CS] + [1000 + p] * (8 - p) * CS for p in range(4)]


def check_read(cache: TieredKVCache, hashes: list[bytes]) -> int:
    with cache.read(hashes) as chunks:
        assert len(chunks) <= len(hashes)
        for h, got in zip(hashes, chunks, strict=False):
            assert bytes(got.data) == bytes(content(h).data)
        return len(chunks)


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["store", "read", "drop_l1"]), st.integers(0, 3), st.integers(1, 8)
        ),
        max_size=30,
    ),
    l1_entries=st.integers(0, 6),
    policy=st.sampled_from(["lru", "lfu", "fifo"]),
)
def test_reads_return_exactly_what_was_stored(
    ops: list[tuple[str, int, int]], l1_entries: int, policy: str
) -> None:
    l2 = MemoryL2Backend(max_bytes=5 * ENTRY)  # small: L2 drops old entries too
    config = CacheConfig(
        chunk_size=CS, l1_size_bytes=l1_entries * ENTRY, eviction_policy=policy, l2_deadline_s=5.0
    )
    with TieredKVCache(config, SPEC, LAYOUT, l2=l2) as cache:
        for op, p, n in ops:
            hashes = cache.chain_hashes(prompts()[p])[:n]
            if op == "store":
                cache.store_hashes(hashes, [content(h) for h in hashes])
                assert cache.flush(5.0)
            elif op == "read":
                promised = cache.lookup_hashes(hashes).total_chunks
                # single-threaded, generous deadline: read delivers exactly what lookup promised
                assert check_read(cache, hashes) == promised
            else:
                cache.l1.clear()
            assert cache.l1.used_bytes <= config.l1_size_bytes


def test_concurrent_readers_and_writers_see_only_correct_bytes() -> None:
    l2 = MemoryL2Backend()
    config = CacheConfig(chunk_size=CS, l1_size_bytes=6 * ENTRY, l2_write_queue_chunks=8)
    errors: list[BaseException] = []
    with TieredKVCache(config, SPEC, LAYOUT, l2=l2) as cache:
        all_hashes = [cache.chain_hashes(p) for p in prompts()]

        def work(seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                for _ in range(150):
                    hashes = all_hashes[int(rng.integers(4))][: int(rng.integers(1, 9))]
                    if rng.random() < 0.5:
                        cache.store_hashes(hashes, [content(h) for h in hashes])
                    else:
                        check_read(cache, hashes)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert cache.flush(10.0)
        assert errors == []
        stats = cache.stats()
        assert stats["l1_used_bytes"] <= config.l1_size_bytes
        assert stats["l2_corrupt_entries"] == 0 and stats["l2_errors"] == 0


def test_close_while_other_threads_use_the_cache_raises_nothing() -> None:
    l2 = MemoryL2Backend()
    config = CacheConfig(chunk_size=CS, l1_size_bytes=6 * ENTRY, l2_deadline_s=5.0)
    cache = TieredKVCache(config, SPEC, LAYOUT, l2=l2)
    all_hashes = [cache.chain_hashes(p) for p in prompts()]
    errors: list[BaseException] = []
    started = threading.Barrier(4)

    def work(seed: int) -> None:
        try:
            started.wait()
            for i in range(300):
                hashes = all_hashes[(seed + i) % 4]
                cache.store_hashes(hashes, [content(h) for h in hashes])
                check_read(cache, hashes)
                cache.lookup_hashes(hashes)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    started.wait()
    cache.close()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.stats()["l2_pending_writes"] == 0
