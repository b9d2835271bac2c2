from __future__ import annotations

from collections import Counter

import pytest

from kvmesh.kvcache.l2.registry import create_l2_backend
from kvmesh.store.client import TOKEN_ENV, StoreClientConfig, StoreL2Backend, _batches, hrw_owner


def test_url_with_several_nodes_token_and_options() -> None:
    cfg = StoreClientConfig.from_url(
        "kvmesh://:s3cr%40t@10.0.0.1:9200,10.0.0.2:9201/?pool=8&shm=0&connect_timeout=500ms"
    )
    assert cfg == StoreClientConfig(
        nodes=(("10.0.0.1", 9200), ("10.0.0.2", 9201)), token="s3cr@t", pool_size=8,
        connect_timeout_s=0.5, use_shm=False,
    )


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert StoreClientConfig.from_url("kvmesh://h:1").token == "from-env"
    assert StoreClientConfig.from_url("kvmesh://:url@h:1").token == "url"


@pytest.mark.parametrize("url, message", [
    ("redis://h:1", "not a kvmesh"),
    ("kvmesh://h", "host:port"),
    ("kvmesh://", "at least one"),
    ("kvmesh://h:1,h:1", "duplicate"),
    ("kvmesh://h:0", "invalid node"),
    ("kvmesh://h:1?pool=0", "pool_size"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StoreClientConfig.from_url(url)


def test_registry_creates_backend_without_token_in_url() -> None:
    backend = create_l2_backend("kvmesh://:tok@127.0.0.1:9200,127.0.0.1:9201")
    assert isinstance(backend, StoreL2Backend)
    assert backend.url == "kvmesh://127.0.0.1:9200,127.0.0.1:9201"
    assert [n.node_id for n in backend.nodes] == ["127.0.0.1:9200", "127.0.0.1:9201"]


def test_hrw_is_stable_balanced_and_moves_only_lost_keys() -> None:
    keys = [i.to_bytes(16, "little") for i in range(3000)]
    three = StoreL2Backend.from_url("kvmesh://a:1,b:2,c:3")
    owners = [three.owner(k) for k in keys]
    assert owners == [hrw_owner(k, three._seeds) for k in keys]  # deterministic
    counts = Counter(owners)
    assert sorted(counts) == [0, 1, 2] and min(counts.values()) > 850  # about 1000 each
    two = StoreL2Backend.from_url("kvmesh://a:1,c:3")  # node b removed
    for k, owner in zip(keys, owners):
        if owner != 1:  # keys of a and c stay where they were
            assert two.nodes[two.owner(k)].node_id == three.nodes[owner].node_id
    # Node order in the URL does not matter: the seed is the node id.
    shuffled = StoreL2Backend.from_url("kvmesh://c:3,a:1,b:2")
    assert [shuffled.nodes[shuffled.owner(k)].node_id for k in keys[:50]] == [
        three.nodes[o].node_id for o in owners[:50]
    ]


def test_put_batches_respect_request_limits() -> None:
    items = [(bytes(16), b"x" * 100)] * 5
    assert [len(b) for b in _batches(items, 2 * 124, 1000)] == [2, 2, 1]
    assert [len(b) for b in _batches(items, 1 << 20, 3)] == [3, 2]
    assert [len(b) for b in _batches(items[:1], 10, 10)] == [1]
