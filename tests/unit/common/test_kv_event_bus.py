"""KV event bus over real ZeroMQ sockets on loopback."""

from __future__ import annotations

import asyncio

import pytest

from kvmesh.common.hashing import KEY_VERSION
from kvmesh.common.kv_event_bus import KVEventPublisher, KVEventSubscriber
from kvmesh.common.kv_events import KV_EVENT_TOPIC, KVEventBatch, Tier, admitted, evicted

H1, H2 = b"\x01" * 16, b"\x02" * 16


async def _until(predicate, what: str, timeout_s: float = 10.0) -> None:  # noqa: ANN001
    """Poll on the loop (PUB/SUB subscriptions propagate asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


@pytest.fixture
def publisher():  # noqa: ANN201
    pub = KVEventPublisher("tcp://127.0.0.1:0", source="http://127.0.0.1:9001", model_id="tiny", chunk_size=16)
    yield pub
    pub.close()


async def test_publisher_to_subscriber_round_trip(publisher: KVEventPublisher) -> None:
    got: list[KVEventBatch] = []
    sub = KVEventSubscriber(got.append)
    sub.connect(publisher.endpoint)
    task = asyncio.create_task(sub.run())
    try:
        # Slow joiner: heartbeats until the subscription has propagated.
        async def joined() -> None:
            while not got:
                publisher.publish([])
                await asyncio.sleep(0.01)
        await asyncio.wait_for(joined(), 10)
        got.clear()
        publisher.publish([admitted(Tier.ENGINE, [H1, H2]), evicted(Tier.L1, [H1])])
        await _until(lambda: len(got) == 1, "batch")
        batch = got[0]
        assert (batch.source, batch.model_id, batch.chunk_size, batch.key_version) == (
            "http://127.0.0.1:9001", "tiny", 16, KEY_VERSION)
        assert batch.events == [admitted(Tier.ENGINE, [H1, H2]), evicted(Tier.L1, [H1])]
        assert batch.seq == publisher.next_seq - 1
        assert sub.endpoints == frozenset({publisher.endpoint})
    finally:
        sub.close()
        await asyncio.wait_for(task, 5)


def test_port_zero_resolves_to_real_port(publisher: KVEventPublisher) -> None:
    assert publisher.endpoint.startswith("tcp://127.0.0.1:")
    assert int(publisher.endpoint.rsplit(":", 1)[1]) > 0


def test_seq_gaps_and_restarts_are_reported() -> None:
    gaps: list[tuple[str, int, int]] = []
    got: list[int] = []
    sub = KVEventSubscriber(lambda b: got.append(b.seq), on_gap=lambda *a: gaps.append(a))
    from kvmesh.common.kv_events import encode_batch

    def frame(seq: int) -> list[bytes]:
        return [KV_EVENT_TOPIC, encode_batch(KVEventBatch("w1", "m", 16, KEY_VERSION, seq))]

    for seq in (0, 1, 3, 0):
        sub.handle_message(frame(seq))
    sub.close()
    assert got == [0, 1, 3, 0]
    assert gaps == [("w1", 2, 3), ("w1", 4, 0)]


def test_bad_messages_go_to_on_error_and_are_skipped() -> None:
    errors: list[Exception] = []
    got: list[KVEventBatch] = []
    sub = KVEventSubscriber(got.append, on_error=errors.append)
    sub.handle_message([KV_EVENT_TOPIC, b"\xc1 not msgpack"])
    sub.handle_message([b"other-topic"])
    sub.close()
    assert got == []
    assert [type(e).__name__ for e in errors] == ["ProtocolError", "KvmeshError"]


def test_publisher_validates_arguments() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        KVEventPublisher("tcp://127.0.0.1:0", source="s", model_id="m", chunk_size=0)
    with pytest.raises(ValueError, match="cannot bind"):
        KVEventPublisher("nonsense://x", source="s", model_id="m", chunk_size=4)


def test_publish_after_close_is_misuse(publisher: KVEventPublisher) -> None:
    publisher.close()
    publisher.close()
    with pytest.raises(ValueError, match="closed"):
        publisher.publish([])
