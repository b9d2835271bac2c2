"""Disk tier of a real `kvmesh store`: demotion, restart, corrupt files dropped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmesh.store.client import StoreL2Backend
from kvmesh.store.disk_tier import DiskTier
from kvmesh.store.process import StoreProcess

pytestmark = pytest.mark.integration
VALUE = 256 * 1024


async def test_demoted_entries_survive_restart_and_corrupt_ones_are_dropped(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    proc = StoreProcess(memory_size="1MiB", disk_path=disk, disk_size="16MiB")
    ks = [i.to_bytes(16, "big") for i in range(10)]
    values = [os.urandom(VALUE) for _ in ks]
    try:
        proc.start()
        backend = StoreL2Backend.from_url(proc.url)
        for k, v in zip(ks, values):  # one at a time: LRU order = key order
            await backend.put_many([(k, v)])
        stats = (await backend.stats())[f"127.0.0.1:{proc.port}"]
        assert stats["tiers"]["memory"]["entries"] == 4  # exactly 1 MiB of values
        assert stats["tiers"]["disk"]["entries"] == 6 and stats["demotions"] == 6
        await backend.close()
        assert proc.stop() == 0

        layout = DiskTier(disk, 16 << 20)  # inspect the files the server left
        assert sorted(layout._index) == ks[:6]
        bad = layout.path_of(ks[3])
        data = bytearray(bad.read_bytes())
        data[len(data) // 2] ^= 0x55
        bad.write_bytes(bytes(data))

        proc.start()
        backend = StoreL2Backend.from_url(proc.url + "?shm=0")
        got = await backend.get_many(ks)
        assert [i for i, v in enumerate(got) if v is not None] == [0, 1, 2, 4, 5]
        assert all(bytes(got[i]) == values[i] for i in (0, 1, 2, 4, 5))  # type: ignore[arg-type]
        stats = (await backend.stats())[f"127.0.0.1:{proc.port}"]
        assert stats["tiers"]["disk"]["corrupt_dropped"] == 1
        # All five came from disk; four fit in memory while the batch pinned them.
        assert stats["hits"]["disk"] == 5 and stats["promotions"] == 4
        await backend.close()
        shm_backend = StoreL2Backend.from_url(proc.url)  # leases + TCP for the unpinnable one
        got = await shm_backend.get_many(ks)
        assert shm_backend.shm_active == [True]
        assert [i for i, v in enumerate(got) if v is not None] == [0, 1, 2, 4, 5]
        assert all(bytes(got[i]) == values[i] for i in (0, 1, 2, 4, 5))  # type: ignore[arg-type]
        await shm_backend.close()
    finally:
        proc.close()


async def test_client_survives_server_restart_and_remaps_shared_memory() -> None:
    proc = StoreProcess(memory_size="8MiB")
    try:
        proc.start()
        backend = StoreL2Backend.from_url(proc.url)
        first = os.urandom(16)
        await backend.put_many([(first, b"before restart")])
        old_info = backend.nodes[0].info
        assert proc.stop() == 0
        proc.start()  # same port, new process, new shared-memory segment
        # Pooled connections are stale: detected and replaced, so no call fails.
        assert await backend.get_many([first]) == [None]  # memory-only: gone
        second = os.urandom(16)
        await backend.put_many([(second, b"after restart")])
        got = await backend.get_many([second])
        assert [bytes(v) for v in got if v is not None] == [b"after restart"]
        assert backend.shm_active == [True]
        new_info = backend.nodes[0].info
        assert old_info is not None and new_info is not None
        assert new_info.shm_path != old_info.shm_path
        await backend.close()
    finally:
        proc.close()
