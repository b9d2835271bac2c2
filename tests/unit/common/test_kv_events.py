from __future__ import annotations

import msgpack
import pytest

from kvmesh.common.errors import ProtocolError, VersionMismatchError
from kvmesh.common.kv_events import (
    EventKind,
    KVEvent,
    KVEventBatch,
    Tier,
    admitted,
    decode_batch,
    encode_batch,
    evicted,
)

H1, H2 = b"\x01" * 16, b"\x02" * 16


def _batch() -> KVEventBatch:
    return KVEventBatch(
        source="http://127.0.0.1:8001", model_id="tiny", chunk_size=256, key_version=1, seq=7,
        events=[admitted(Tier.L1, [H1, H2]), evicted(Tier.L2, [H1]), KVEvent(EventKind.CLEARED, Tier.ENGINE)],
        timestamp=123.5,
    )


def test_round_trip_is_exact() -> None:
    batch = _batch()
    assert decode_batch(encode_batch(batch)) == batch


def test_wire_map_is_pinned() -> None:
    obj = msgpack.unpackb(encode_batch(_batch()))
    assert obj == {
        "v": 1, "kv": 1, "cs": 256, "src": "http://127.0.0.1:8001", "m": "tiny", "seq": 7, "ts": 123.5,
        "ev": [[0, "l1", [H1, H2]], [1, "l2", [H1]], [2, "engine", []]],
    }


def test_other_version_is_rejected_loudly() -> None:
    obj = msgpack.unpackb(encode_batch(_batch()))
    obj["v"] = 2
    with pytest.raises(VersionMismatchError, match="expected 1, got 2"):
        decode_batch(msgpack.packb(obj))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.pop("src"),
        lambda o: o.__setitem__("ev", [[9, "l1", []]]),
        lambda o: o.__setitem__("ev", [[0, "l9", []]]),
        lambda o: o.__setitem__("ev", [[0, "l1", [b"short"]]]),
        lambda o: o.__setitem__("seq", "7"),
        lambda o: o.__setitem__("cs", True),
    ],
)
def test_malformed_batches_raise_protocol_error(mutate) -> None:  # noqa: ANN001
    obj = msgpack.unpackb(encode_batch(_batch()))
    mutate(obj)
    with pytest.raises(ProtocolError):
        decode_batch(msgpack.packb(obj))


def test_garbage_bytes_raise_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_batch(b"\xc1\xff\x00garbage")
    with pytest.raises(ProtocolError):
        decode_batch(msgpack.packb([1, 2, 3]))
