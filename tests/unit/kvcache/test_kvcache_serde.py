"""Serde: exact header bytes, round trips, and every corruption is caught."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from kvmesh.common.errors import CorruptEntryError
from kvmesh.kvcache.chunk import KVChunk
from kvmesh.kvcache.dtypes import BY_CODE, BY_NAME, dtype_by_name
from kvmesh.kvcache.serde import HEADER_SIZE, MAGIC, SERDE_VERSION, decode, encode, frame_copy


def test_dtype_codes_are_pinned() -> None:
    # Part of the wire format: codes may only be appended.
    assert {d.name: d.code for d in BY_NAME.values()} == {
        "bfloat16": 1,
        "float16": 2,
        "float32": 3,
        "float8_e4m3fn": 4,
        "float8_e5m2": 5,
        "uint8": 6,
        "int8": 7,
        "float64": 8,
        "int16": 9,
        "int32": 10,
        "uint16": 11,
    }
    assert len(BY_CODE) == len(BY_NAME)
    assert dtype_by_name("torch.bfloat16").itemsize == 2
    with pytest.raises(ValueError, match="unknown KV dtype 'bf17'"):
        dtype_by_name("bf17")


def test_header_layout_is_exactly_as_drawn() -> None:
    payload = np.arange(6, dtype="<u2").reshape(2, 3)
    wire = bytes(encode("bfloat16", (2, 3), payload))
    assert len(wire) == HEADER_SIZE + 12
    assert wire[0:4] == MAGIC == b"KVMC"
    assert struct.unpack_from("<HBBQQ", wire, 4) == (
        SERDE_VERSION,
        1,
        2,
        12,
        xxhash.xxh3_64_intdigest(payload.tobytes()),
    )
    assert struct.unpack_from("<8I", wire, 24) == (2, 3, 0, 0, 0, 0, 0, 0)
    assert struct.unpack_from("<II", wire, 56) == (xxhash.xxh32_intdigest(wire[:56]), 0)
    assert wire[64:] == payload.tobytes()


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_round_trip_every_dtype(name: str) -> None:
    itemsize = BY_NAME[name].itemsize
    raw = np.random.default_rng(1).integers(0, 256, 4 * 5 * itemsize, dtype=np.uint8)
    frame = decode(bytes(encode(name, (4, 5), raw)))
    assert frame.sealed
    assert (frame.chunk.dtype, frame.chunk.shape, frame.chunk.nbytes) == (name, (4, 5), raw.nbytes)
    assert bytes(frame.chunk.data) == raw.tobytes()


def test_decode_is_zero_copy() -> None:
    wire = bytearray(encode("uint8", (3,), b"abc"))
    frame = decode(wire)
    wire[HEADER_SIZE] = ord("z")  # the chunk views the received buffer itself
    assert bytes(frame.chunk.data) == b"zbc"


def test_frame_is_unsealed_until_sealed_and_seal_is_idempotent() -> None:
    chunk = KVChunk.from_buffer("uint8", (4,), b"wxyz")
    frame = frame_copy(chunk)
    assert not frame.sealed and frame.nbytes == HEADER_SIZE + 4
    first = bytes(frame.seal())
    assert frame.sealed and bytes(frame.seal()) == first
    assert bytes(decode(first).chunk.data) == b"wxyz"


def _wire() -> bytes:
    return bytes(encode("float16", (2, 2, 2), np.arange(8, dtype="<f2")))


@pytest.mark.parametrize("offset", list(range(HEADER_SIZE)) + [HEADER_SIZE, HEADER_SIZE + 15])
def test_any_flipped_byte_in_header_or_payload_is_corrupt(offset: int) -> None:
    wire = bytearray(_wire())
    wire[offset] ^= 0x40
    with pytest.raises(CorruptEntryError):
        decode(wire)


@pytest.mark.parametrize("cut", [0, 1, 10, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 15])
def test_truncated_values_are_corrupt(cut: int) -> None:
    with pytest.raises(CorruptEntryError):
        decode(_wire()[:cut])


def test_trailing_garbage_and_other_versions_are_corrupt() -> None:
    with pytest.raises(CorruptEntryError, match="header says"):
        decode(_wire() + b"\0")
    newer = bytearray(_wire())
    struct.pack_into("<H", newer, 4, SERDE_VERSION + 1)
    with pytest.raises(CorruptEntryError, match="serde version 2"):
        decode(newer)
    with pytest.raises(CorruptEntryError, match="bad magic"):
        decode(b"GET / HTTP/1.1\r\n" + bytes(100))


@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=8),
    name=st.sampled_from(sorted(BY_NAME)),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_property(shape: list[int], name: str, seed: int) -> None:
    nbytes = int(np.prod(shape)) * BY_NAME[name].itemsize
    raw = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)
    chunk = decode(bytes(encode(name, shape, raw))).chunk
    assert (chunk.dtype, chunk.shape, bytes(chunk.data)) == (name, tuple(shape), raw.tobytes())


def test_chunk_validation_and_numpy_view() -> None:
    arr = np.arange(12, dtype=np.uint16).reshape(3, 4)
    chunk = KVChunk.from_array(arr, "bfloat16")
    assert chunk.nbytes == 24 and chunk.shape == (3, 4)
    view = chunk.as_numpy()
    assert view.dtype == np.dtype("<u2") and view.tolist() == arr.tolist()
    assert np.shares_memory(view, arr)
    assert KVChunk.from_array(np.zeros(3, np.float32)).dtype == "float32"
    with pytest.raises(ValueError, match=r"bfloat16\[3, 5\] needs 30 bytes, buffer has 24"):
        KVChunk.from_buffer("bfloat16", (3, 5), arr)
    with pytest.raises(ValueError, match="C-contiguous"):
        KVChunk.from_array(arr[:, ::2], "bfloat16")
    with pytest.raises(ValueError, match="shape must have 1..8 dims"):
        KVChunk.from_buffer("uint8", (1,) * 9, b"x")
    copied = chunk.copy()
    arr[0, 0] = 99
    assert copied.as_numpy()[0, 0] == 0 and chunk.as_numpy()[0, 0] == 99
