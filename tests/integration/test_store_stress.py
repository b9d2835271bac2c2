"""Concurrent mixed traffic on a tiny memory tier with a disk tier: never a wrong byte."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from pathlib import Path

import pytest

from kvmesh.store.client import StoreL2Backend
from kvmesh.store.process import StoreProcess

pytestmark = pytest.mark.integration
SEED_BASE = int(os.environ.get("KVMESH_STRESS_SEED", "0"))


def key_of(i: int) -> bytes:
    return hashlib.blake2b(i.to_bytes(4, "little"), digest_size=16).digest()


def value_of(key: bytes) -> bytes:
    """Content derived from the key, so any mix-up of bytes is detectable."""
    size = 1 + int.from_bytes(key[:3], "little") % (300 * 1024)
    block = hashlib.sha256(key).digest()
    return (block * (size // 32 + 1))[:size]


async def client_loop(backend: StoreL2Backend, seed: int, rounds: int) -> dict[str, int]:
    rng = random.Random(seed)
    seen = {"hits": 0, "misses": 0}
    for _ in range(rounds):
        keys = [key_of(rng.randrange(120)) for _ in range(rng.randrange(1, 8))]
        op = rng.random()
        if op < 0.45:
            await backend.put_many([(k, value_of(k)) for k in keys])
        elif op < 0.9:
            for k, v in zip(keys, await backend.get_many(keys)):
                if v is None:
                    seen["misses"] += 1
                else:
                    assert bytes(v) == value_of(k)
                    seen["hits"] += 1
        elif op < 0.95:
            await backend.delete_many(keys[:1])
        else:
            assert 0 <= await backend.exists_prefix(keys) <= len(keys)
    return seen


async def test_mixed_concurrent_traffic_returns_only_correct_bytes(tmp_path: Path) -> None:
    proc = StoreProcess(memory_size="2MiB", disk_path=tmp_path / "disk", disk_size="12MiB")
    proc.start()
    backends = [StoreL2Backend.from_url(f"{proc.url}?shm={i % 2}") for i in range(4)]
    try:
        results = await asyncio.gather(*(
            client_loop(b, seed + SEED_BASE, 60) for seed, b in enumerate(backends)
        ))
        assert sum(r["hits"] for r in results) > 0
        node = backends[0].nodes[0]
        # RELEASE has no reply, so the last ones may still be in flight: poll.
        deadline = asyncio.get_running_loop().time() + 5
        while (stats := await node.stats())["leases_active"]:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        assert stats["leases_expired"] == 0  # every lease was released, none timed out
        assert stats["demotions"] > 0 and stats["promotions"] > 0
        assert stats["tiers"]["memory"]["bytes"] <= 2 << 20
        assert stats["tiers"]["disk"]["bytes"] <= 12 << 20
    finally:
        for b in backends:
            await b.close()
        proc.close()
