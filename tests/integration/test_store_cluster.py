"""Three real `kvmesh store` processes as one L2, sharded by HRW; one is killed mid-run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kvmesh.common.errors import BackendUnavailableError
from kvmesh.store.client import StoreL2Backend
from kvmesh.store.process import StoreProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster() -> Iterator[list[StoreProcess]]:
    procs = [StoreProcess(memory_size="16MiB") for _ in range(3)]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.close()


async def test_sharding_and_a_node_killed_mid_run(cluster: list[StoreProcess]) -> None:
    url = "kvmesh://" + ",".join(f"127.0.0.1:{p.port}" for p in cluster) + "?retry_interval=60s"
    backend = StoreL2Backend.from_url(url)
    try:
        keys = [os.urandom(16) for _ in range(120)]
        values = {k: os.urandom(1000) for k in keys}
        await backend.put_many([(k, values[k]) for k in keys[:60]])

        owners = [backend.owner(k) for k in keys]
        stats = await backend.stats()
        per_node = [stats[n.node_id]["tiers"]["memory"]["entries"] for n in backend.nodes]
        assert per_node == [owners[:60].count(i) for i in range(3)]  # each key on its owner only
        assert min(per_node) > 0

        cluster[1].kill()  # crash, mid-run

        await backend.put_many([(k, values[k]) for k in keys[60:]])  # no request fails
        got = await backend.get_many(keys)
        for k, owner, value in zip(keys, owners, got):
            if owner == 1:
                assert value is None  # the dead node's keys are misses
            else:
                assert value is not None and bytes(value) == values[k]
        alive_prefix = next(i for i, o in enumerate(owners) if o == 1)
        assert await backend.exists_prefix(keys) == alive_prefix
        assert sorted(await backend.stats()) == sorted(
            backend.nodes[i].node_id for i in (0, 2)
        )
        await backend.ping()  # the cluster as a whole still answers

        for proc in (cluster[0], cluster[2]):
            proc.kill()
        with pytest.raises(BackendUnavailableError):
            await backend.get_many(keys)
    finally:
        await backend.close()


async def test_single_dead_node_raises_transport_error(cluster: list[StoreProcess]) -> None:
    from kvmesh.common.errors import TransportError

    cluster[0].kill()
    backend = StoreL2Backend.from_url(f"kvmesh://127.0.0.1:{cluster[0].port}")
    try:
        with pytest.raises(TransportError):
            await backend.get_many([os.urandom(16)])
    finally:
        await backend.close()
