"""ConnectorRuntime: save/load between paged tensors and a real TieredKVCache; events, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch is installed by `make vllm`")

import zmq  # noqa: E402

from kvmesh.common.hashing import ChainSpec, KVLayout, RequestExtras, prefix_hashes  # noqa: E402
from kvmesh.common.kv_events import KV_EVENT_TOPIC, EventKind, Tier, decode_batch  # noqa: E402
from kvmesh.connector.config import ConnectorConfig  # noqa: E402
from kvmesh.connector.kv_copy import PagedKV, PagedShape  # noqa: E402
from kvmesh.connector.planner import LoadSpec, SaveSpec  # noqa: E402
from kvmesh.connector.runtime import (  # noqa: E402
    ConnectorRuntime,
    acquire_runtime,
    has_runtime,
    release_runtime,
)

SHAPE = PagedShape(block_size=4, num_kv_heads=2, head_dim=8)
SPEC = ChainSpec("unit", chunk_size=8)
LAYOUT = KVLayout("bfloat16", num_layers=2, num_kv_heads=2, head_dim=8, layout_tag="bhnc/test/bs4")
TOKENS = list(range(400))
HASHES = prefix_hashes(TOKENS, SPEC, RequestExtras())


def _paged(fill: bool, num_blocks: int = 12) -> PagedKV:
    gen = torch.Generator().manual_seed(3)
    dims = (num_blocks, SHAPE.num_kv_heads, SHAPE.block_size, 2 * SHAPE.head_dim)
    make = (
        (lambda: torch.randn(dims, generator=gen).to(torch.bfloat16))
        if fill
        else (lambda: torch.zeros(dims, dtype=torch.bfloat16))
    )
    return PagedKV({f"layers.{i}.attn": make() for i in range(2)}, SHAPE, detail="test")


@pytest.fixture
def runtime() -> Iterator[ConnectorRuntime]:
    rt = ConnectorRuntime(ConnectorConfig(chunk_size=8, l1_size_bytes=1 << 20), SPEC, LAYOUT)
    try:
        yield rt
    finally:
        rt.close()


def _sample(rt: ConnectorRuntime, name: str, **labels: str) -> float:
    value = rt.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_save_then_load_restores_the_exact_blocks(runtime: ConnectorRuntime) -> None:
    src, dst = _paged(fill=True), _paged(fill=False)
    assert runtime.save(src, [SaveSpec("r", tuple(HASHES[:2]), (5, 6, 7, 8))]) == 2
    assert runtime.lookup(HASHES[:3]) == (2, 2)
    # Load both chunks, skipping the first block (vLLM already holds it), into blocks 1..3.
    outcome = runtime.load(dst, LoadSpec("r", tuple(HASHES[:2]), 0, 1, (1, 2, 3), l1_tokens=12))
    assert outcome.loaded_tokens == 12 and outcome.failed_block_ids == ()
    for s, d in zip(src._layers, dst._layers, strict=True):
        assert torch.equal(d[1:4], s[6:9])
        assert not d[0].any() and not d[4:].any()
    assert _sample(runtime, "kvmesh_connector_loaded_tokens_total") == 12
    assert _sample(runtime, "kvmesh_connector_hit_tokens_total", tier="l1") == 12
    assert _sample(runtime, "kvmesh_connector_saved_chunks_total") == 2
    assert _sample(runtime, "kvmesh_connector_saved_bytes_total") == 2 * 2 * 2 * 2 * 4 * 16 * 2
    assert _sample(runtime, "kvmesh_connector_lookup_tokens_total") == 24


def test_missing_chunks_are_reported_as_failed_blocks(runtime: ConnectorRuntime) -> None:
    src, dst = _paged(fill=True), _paged(fill=False)
    runtime.save(src, [SaveSpec("r", (HASHES[0],), (0, 1))])
    outcome = runtime.load(dst, LoadSpec("r", tuple(HASHES[:3]), 0, 0, (4, 5, 6, 7, 8, 9)))
    assert outcome.loaded_tokens == 8
    assert outcome.failed_block_ids == (6, 7, 8, 9)
    assert _sample(runtime, "kvmesh_connector_load_failed_tokens_total") == 16


def test_a_chunk_of_another_shape_is_never_scattered(runtime: ConnectorRuntime) -> None:
    other = PagedKV({"layers.0.attn": torch.ones(4, 2, 4, 16, dtype=torch.bfloat16)}, SHAPE)
    runtime.save(other, [SaveSpec("r", (HASHES[0],), (0, 1))])  # 1 layer instead of 2
    dst = _paged(fill=False)
    outcome = runtime.load(dst, LoadSpec("r", (HASHES[0],), 0, 0, (0, 1)))
    assert outcome.failed_block_ids == (0, 1)
    assert all(not t.any() for t in dst._layers)


def test_kv_events_are_published_for_l1_admissions(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path / 'events.sock'}"
    config = ConnectorConfig(
        chunk_size=8,
        l1_size_bytes=1 << 20,
        kv_events_endpoint=endpoint,
        kv_events_source="http://w:8000",
    )
    rt = ConnectorRuntime(config, SPEC, LAYOUT)
    sub = zmq.Context.instance().socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.SUBSCRIBE, KV_EVENT_TOPIC)
        monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sub.connect(endpoint)
        assert monitor.poll(10_000)
        sub.disable_monitor()
        monitor.close()
        # The subscription reaches the publisher asynchronously: save new chunks until one arrives.
        paged = _paged(fill=True)
        for i in range(len(HASHES)):
            rt.save(paged, [SaveSpec("r", (HASHES[i],), (0, 1))])
            if sub.poll(100):
                break
        batch = decode_batch(sub.recv_multipart()[1])
        assert (batch.source, batch.model_id, batch.chunk_size) == ("http://w:8000", "unit", 8)
        [event] = batch.events
        assert (event.kind, event.tier) == (EventKind.ADMITTED, Tier.L1)
        assert len(event.chain_hashes) == 1 and event.chain_hashes[0] in HASHES[: i + 1]
    finally:
        sub.close(linger=0)
        rt.close()


def test_one_runtime_per_engine_is_shared_and_reference_counted() -> None:
    config = ConnectorConfig(chunk_size=8, l1_size_bytes=1 << 20)
    first = acquire_runtime("engine-x", config, SPEC, LAYOUT)
    second = acquire_runtime("engine-x", config, SPEC, LAYOUT)
    assert first is second and has_runtime("engine-x")
    with pytest.raises(ValueError, match="disagree"):
        acquire_runtime("engine-x", config, SPEC, KVLayout("float16", 2, 2, 8, layout_tag="x"))
    release_runtime("engine-x")
    assert has_runtime("engine-x")
    release_runtime("engine-x")
    assert not has_runtime("engine-x")
