from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmesh.common.errors import ProtocolError, VersionMismatchError
from kvmesh.store.protocol import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MISS,
    Header,
    Op,
    Status,
    error_frame,
    pack_keys,
    pack_lease_table,
    pack_put_table,
    unpack_header,
    unpack_keys,
    unpack_lease_table,
    unpack_put_table,
)

K1, K2 = bytes(range(16)), bytes(range(16, 32))


def test_header_is_24_bytes_with_documented_layout() -> None:
    data = Header(op=Op.GET_MANY, count=3, body_len=48).pack()
    assert HEADER_SIZE == 24
    assert data == b"KVMS" + b"\x01\x00" + b"\x04" + b"\x00" + b"\x00\x00" + b"\x00\x00" + (
        b"\x03\x00\x00\x00" + b"\x30" + b"\x00" * 7
    )
    assert unpack_header(data) == Header(op=Op.GET_MANY, count=3, body_len=48)


def test_bad_magic_and_reserved_bits_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="magic"):
        unpack_header(b"XXXX" + bytes(20))
    with pytest.raises(ProtocolError, match="reserved"):
        unpack_header(HEADER.pack(MAGIC, 1, Op.PING, 0, 0, 7, 0, 0))
    with pytest.raises(ProtocolError, match="reserved"):
        unpack_header(HEADER.pack(MAGIC, 1, Op.PING, 0x80, 0, 0, 0, 0))


def test_other_version_is_a_version_mismatch() -> None:
    with pytest.raises(VersionMismatchError) as exc:
        unpack_header(HEADER.pack(MAGIC, 9, Op.PING, 0, 0, 0, 0, 0))
    assert (exc.value.expected, exc.value.got) == (1, 9)


def test_error_frame_carries_status_and_message() -> None:
    frame = error_frame(Op.PUT_MANY, Status.TOO_LARGE, "too big")
    assert unpack_header(frame[:HEADER_SIZE]) == Header(
        op=Op.PUT_MANY, status=Status.TOO_LARGE, body_len=7
    )
    assert frame[HEADER_SIZE:] == b"too big"


def test_key_and_put_tables_round_trip() -> None:
    assert unpack_keys(pack_keys([K1, K2]), 2) == [K1, K2]
    table = pack_put_table([(K1, 5), (K2, 1 << 40)])
    assert len(table) == 48
    assert unpack_put_table(table, 2) == [(K1, 5), (K2, 1 << 40)]
    with pytest.raises(ValueError, match="16 bytes"):
        pack_keys([b"short"])


def test_lease_table_round_trip() -> None:
    body = pack_lease_table(7, [(4096, 10), (0, MISS)])
    assert len(body) == 8 * 5
    assert unpack_lease_table(body, 2) == (7, [(4096, 10), (0, MISS)])


@given(st.one_of(
    st.binary(min_size=HEADER_SIZE, max_size=HEADER_SIZE),
    st.binary(min_size=HEADER_SIZE - 6, max_size=HEADER_SIZE - 6).map(
        lambda rest: MAGIC + b"\x01\x00" + rest),  # plausible: right magic and version
))
def test_random_headers_decode_or_raise_protocol_error(data: bytes) -> None:
    try:
        header = unpack_header(data)
    except ProtocolError:
        return
    assert header.pack() == data  # whatever decodes re-encodes to the same bytes
