from __future__ import annotations

import asyncio

import pytest

from kvmesh.bench.store_bench import BenchConfig, _timed_loop, markdown


async def test_concurrent_clients_count_every_byte() -> None:
    async def work(client: int, i: int) -> int:
        await asyncio.sleep(0)  # interleave the clients
        return 10 + client

    wall, moved, latencies = await _timed_loop(4, work, lambda c, i: i >= 25)
    assert moved == 25 * (10 + 11 + 12 + 13)
    assert len(latencies) == 100 and wall > 0


def test_config_sizes_batches_and_validation() -> None:
    cfg = BenchConfig((2 << 20, 32 << 20), clients=4, working_set_bytes=256 << 20,
                      batch_bytes=16 << 20)
    assert (cfg.batch(2 << 20), cfg.num_keys(2 << 20)) == (8, 128)
    assert (cfg.batch(32 << 20), cfg.num_keys(32 << 20)) == (1, 8)
    assert BenchConfig((1 << 20,), clients=8, working_set_bytes=1 << 20).num_keys(1 << 20) == 128
    with pytest.raises(ValueError, match="rounds"):
        BenchConfig((1,), rounds=0)


def test_markdown_speedup_column() -> None:
    figures = {"get_gbps": 1.0, "get_p50_ms": 1.0, "get_p99_ms": 2.0, "put_gbps": 1.0,
               "exists_prefix_p50_ms": 0.1}
    row = {"value_size_bytes": 2 << 20, "kvmesh": {**figures, "get_gbps": 3.0},
           "kvmesh_shm": {**figures, "get_gbps": 10.0}, "redis": figures}
    lines = markdown([row]).splitlines()
    assert [line.rsplit("|", 2)[1].strip() for line in lines[2:]] == ["3.00x", "10.00x", "1.00x"]
    assert lines[2].startswith("| 2MiB | kvmesh | 3.00 |")
