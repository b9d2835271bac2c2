"""Wire format of the kvmesh store protocol, version 1 (see docs/store-protocol.md).

Every request and every reply starts with the same fixed 24-byte header,
all integers little-endian::

     0        4        6     7     8        10       12         16                 24
     +--------+--------+-----+-----+--------+--------+----------+------------------+
     | magic  |version | op  |flags| status |reserved|  count   |     body_len     |
     | "KVMS" |  u16   | u8  | u8  |  u16   | u16=0  |   u32    |       u64        |
     +--------+--------+-----+-----+--------+--------+----------+------------------+

``count`` is the number of items in the body (keys, lease ids), or a result
count in replies. ``body_len`` bytes of body follow. A reply echoes the
request's opcode; a non-zero ``status`` means the body is a UTF-8 error message.

The header is validated *before* any body byte is read, so a bad or oversized
header costs the server 24 bytes of reading and gets an error reply; the
connection is then closed because the stream position can no longer be trusted.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from kvmesh.common.errors import ProtocolError, VersionMismatchError

MAGIC = b"KVMS"
PROTOCOL_VERSION = 1
KEY_SIZE = 16
"""Bytes in a key (a kvmesh storage key)."""
AUTH_DIGEST_SIZE = 32
"""Bytes in an AUTH body: SHA-256 of the shared token."""
MISS = (1 << 64) - 1
"""Length value meaning "absent" in GET and LEASE reply tables."""
NOT_LEASED = (1 << 64) - 1
"""Offset value in a LEASE reply row meaning "present, but could not be pinned in shared
memory (memory tier full of pinned entries): fetch it with GET_MANY"."""
MAX_ERROR_BODY = 4096
"""Longest error message a client accepts in an error reply."""

HEADER = struct.Struct("<4sHBBHHIQ")
HEADER_SIZE = HEADER.size
PUT_ENTRY = struct.Struct("<16sQ")
"""One row of a PUT_MANY table: key, value length."""
U64 = struct.Struct("<Q")
LEASE_ENTRY = struct.Struct("<QQ")
"""One row of a LEASE_MANY reply: offset in the shared-memory segment, length."""


class Op(enum.IntEnum):
    """Request opcodes."""

    AUTH = 1
    PING = 2
    PUT_MANY = 3
    GET_MANY = 4
    EXISTS_PREFIX = 5
    DELETE = 6
    STATS = 7
    LEASE_MANY = 8
    RELEASE = 9


class Status(enum.IntEnum):
    """Reply status codes; anything but OK carries a UTF-8 message body."""

    OK = 0
    VERSION_MISMATCH = 1
    MALFORMED = 2
    TOO_LARGE = 3
    AUTH_FAILED = 4
    UNKNOWN_OP = 5
    INTERNAL = 6
    UNAVAILABLE = 7


class PutResult(enum.IntEnum):
    """Per-key outcome byte in a PUT_MANY reply."""

    STORED = 0
    EXISTS = 1
    REJECTED = 2


FLAG_NO_REPLY = 0x01
"""Request flag: the server sends no reply (used for RELEASE)."""
_KNOWN_FLAGS = FLAG_NO_REPLY


@dataclass(frozen=True)
class Header:
    """A decoded frame header."""

    op: int
    count: int = 0
    body_len: int = 0
    status: int = Status.OK
    flags: int = 0
    version: int = PROTOCOL_VERSION

    def pack(self) -> bytes:
        """The 24 header bytes."""
        return HEADER.pack(
            MAGIC, self.version, self.op, self.flags, self.status, 0, self.count, self.body_len
        )


@dataclass(frozen=True)
class ServerInfo:
    """The PING reply (JSON): who the server is, its limits, and its shared memory."""

    protocol_version: int
    server_id: str
    """``host:port`` the server listens on."""
    host_id: str
    """Kernel boot id; equal only for processes on the same host."""
    shm_path: str | None
    """Path of the shared-memory segment (None: no shared-memory path offered)."""
    shm_size: int
    """Size of the segment in bytes."""
    shm_nonce: str | None
    """Hex nonce written at the start of the segment."""
    max_value_size_bytes: int
    max_request_size_bytes: int
    max_batch_keys: int

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes | bytearray) -> ServerInfo:
        """Decode a PING body; ``ProtocolError`` if fields are missing."""
        try:
            raw = json.loads(data)
            return cls(**{f.name: raw[f.name] for f in fields(cls)})
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"bad PING reply: {exc}") from exc


def unpack_header(data: bytes | bytearray | memoryview) -> Header:
    """Decode and check magic, version and reserved bits; ``ProtocolError`` on garbage."""
    magic, version, op, flags, status, reserved, count, body_len = HEADER.unpack(data)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r}")
    if version != PROTOCOL_VERSION:
        raise VersionMismatchError("kvmesh store protocol", PROTOCOL_VERSION, version)
    if reserved != 0 or flags & ~_KNOWN_FLAGS:
        raise ProtocolError("reserved header bits are set")
    return Header(op=op, count=count, body_len=body_len, status=status, flags=flags)


def error_frame(op: int, status: Status, message: str) -> bytes:
    """A complete error reply: header plus UTF-8 message."""
    body = message.encode("utf-8")[:MAX_ERROR_BODY]
    return Header(op=op, status=status, body_len=len(body)).pack() + body


def pack_keys(keys: Sequence[bytes]) -> bytes:
    """Concatenate 16-byte keys; ``ValueError`` on a key of another size."""
    for key in keys:
        if len(key) != KEY_SIZE:
            raise ValueError(f"keys must be {KEY_SIZE} bytes, got {len(key)}")
    return b"".join(keys)


def unpack_keys(body: bytes | bytearray | memoryview, count: int) -> list[bytes]:
    """Split a key-list body into ``count`` keys."""
    data = bytes(body)
    return [data[i * KEY_SIZE:(i + 1) * KEY_SIZE] for i in range(count)]


def pack_put_table(items: Sequence[tuple[bytes, int]]) -> bytes:
    """The PUT_MANY table: one (key, length) row per value, in value order."""
    for key, _ in items:
        if len(key) != KEY_SIZE:
            raise ValueError(f"keys must be {KEY_SIZE} bytes, got {len(key)}")
    return b"".join(PUT_ENTRY.pack(key, length) for key, length in items)


def unpack_put_table(table: bytes | bytearray | memoryview, count: int) -> list[tuple[bytes, int]]:
    """Inverse of :func:`pack_put_table`."""
    return [(bytes(k), n) for k, n in PUT_ENTRY.iter_unpack(bytes(table[:count * PUT_ENTRY.size]))]


def pack_u64s(values: Sequence[int]) -> bytes:
    """Concatenate unsigned 64-bit integers (lengths, lease ids)."""
    return struct.pack(f"<{len(values)}Q", *values)


def unpack_u64s(data: bytes | bytearray | memoryview, count: int) -> list[int]:
    """Inverse of :func:`pack_u64s`."""
    return list(struct.unpack_from(f"<{count}Q", data))


def pack_lease_table(lease_id: int, rows: Sequence[tuple[int, int]]) -> bytes:
    """A LEASE_MANY reply body: lease id, then (offset, length) per key."""
    flat = [lease_id]
    for offset, length in rows:
        flat += (offset, length)
    return pack_u64s(flat)


def unpack_lease_table(
    data: bytes | bytearray | memoryview, count: int
) -> tuple[int, list[tuple[int, int]]]:
    """Inverse of :func:`pack_lease_table`."""
    flat = unpack_u64s(data, 1 + 2 * count)
    return flat[0], [(flat[1 + 2 * i], flat[2 + 2 * i]) for i in range(count)]
