"""The disk tier: one checksummed file per value, LRU within a byte budget.

File layout (``<dir>/<key hex[:2]>/<key hex>.kv``), integers little-endian::

     0        4        6        8                 24          32          40          48
     +--------+--------+--------+-----------------+-----------+-----------+-----------+-------+
     | "KVMD" |version |reserved|   key (16 B)    |  length   | xxh3_64   | reserved  | value |
     |        |  u16   |  u16   |                 |   u64     | of value  |  u64 = 0  | bytes |
     +--------+--------+--------+-----------------+-----------+-----------+-----------+-------+

Files are written to ``*.tmp`` and renamed into place, so a crash leaves either
no file or a stray temp file (deleted at start). The index is rebuilt at start
by reading every file: a short file, a bad header or a checksum mismatch drops
it. Values are checksummed again on every read, which also catches later rot.

I/O is synchronous, on the server's event-loop thread. Writes are buffered,
with no fsync: a demotion costs about one memcpy into the page cache, and a
crash can only leave a file that fails its checksum. The cost of this
simplicity: a disk slower than the write rate throttles the whole server
(kernel dirty-page limits), and a cold read stalls other clients for its
duration.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections import OrderedDict
from pathlib import Path

import xxhash

log = logging.getLogger(__name__)

FILE_MAGIC = b"KVMD"
FILE_VERSION = 1
FILE_HEADER = struct.Struct("<4sHH16sQQQ")
FILE_SUFFIX = ".kv"
_VERIFY_CHUNK = 4 << 20


class DiskTier:
    """Values as files under ``directory``, at most ``capacity_bytes`` in total."""

    def __init__(self, directory: Path, capacity_bytes: int) -> None:
        self.directory = directory
        self.capacity_bytes = capacity_bytes
        self._index: OrderedDict[bytes, int] = OrderedDict()
        """key -> value length, least recently used first."""
        self.bytes_stored = 0
        self.evictions = 0
        self.corrupt_dropped = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._rebuild()

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def path_of(self, key: bytes) -> Path:
        """Where ``key``'s file lives."""
        hex_key = key.hex()
        return self.directory / hex_key[:2] / f"{hex_key}{FILE_SUFFIX}"

    @staticmethod
    def file_size(length: int) -> int:
        """Bytes a value of ``length`` takes in the budget."""
        return FILE_HEADER.size + length

    def length(self, key: bytes) -> int | None:
        """The value length of ``key`` (marked most recently used), or ``None``."""
        length = self._index.get(key)
        if length is not None:
            self._index.move_to_end(key)
        return length

    def put(self, key: bytes, data: memoryview | bytes) -> bool:
        """Store ``data`` under ``key``; False if it can never fit or the write fails."""
        if key in self._index:
            return True
        need = self.file_size(len(data))
        if need > self.capacity_bytes:
            return False
        while self.bytes_stored + need > self.capacity_bytes:
            self._evict_one()
        header = FILE_HEADER.pack(
            FILE_MAGIC, FILE_VERSION, 0, key, len(data), xxhash.xxh3_64_intdigest(data), 0
        )
        path = self.path_of(key)
        tmp = path.with_suffix(".tmp")
        try:
            path.parent.mkdir(exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(header)
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:  # disk full or gone: the value simply is not demoted
            log.warning("disk tier write failed for %s: %s", key.hex(), exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        self._index[key] = len(data)
        self.bytes_stored += need
        return True

    def read_into(self, key: bytes, out: memoryview) -> bool:
        """Fill ``out`` (exactly the value's length) with ``key``'s value.

        False, and the file is dropped, if it is missing, short or corrupt.
        """
        try:
            with open(self.path_of(key), "rb") as f:
                header = f.read(FILE_HEADER.size)
                got = f.readinto(out)
        except OSError:
            got, header = -1, b""
        if got != len(out) or not self._header_ok(header, key, len(out), out):
            self.corrupt_dropped += 1
            self.delete(key)
            return False
        return True

    def delete(self, key: bytes) -> bool:
        """Remove ``key``'s file; True if it was indexed."""
        length = self._index.pop(key, None)
        with contextlib.suppress(OSError):
            self.path_of(key).unlink()
        if length is None:
            return False
        self.bytes_stored -= self.file_size(length)
        return True

    @staticmethod
    def _header_ok(header: bytes, key: bytes, length: int, data: memoryview | bytes) -> bool:
        if len(header) != FILE_HEADER.size:
            return False
        magic, version, _, file_key, file_len, checksum, _ = FILE_HEADER.unpack(header)
        return (
            magic == FILE_MAGIC and version == FILE_VERSION and file_key == key
            and file_len == length and xxhash.xxh3_64_intdigest(data) == checksum
        )

    def _evict_one(self) -> None:
        key = next(iter(self._index))
        self.delete(key)
        self.evictions += 1

    def _rebuild(self) -> None:
        """Index every valid file, oldest first; drop temp, short and corrupt files."""
        found: list[tuple[float, bytes, int]] = []
        for path in self.directory.glob("*/*"):
            if path.suffix != FILE_SUFFIX:
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            checked = self._check_file(path)
            if checked is None:
                self.corrupt_dropped += 1
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            found.append((path.stat().st_mtime, *checked))
        for _, key, length in sorted(found):
            self._index[key] = length
            self.bytes_stored += self.file_size(length)
        while self.bytes_stored > self.capacity_bytes:  # the budget may have shrunk
            self._evict_one()
        log.info("disk tier: %d entries, %d bytes, %d dropped", len(self), self.bytes_stored,
                 self.corrupt_dropped)

    def _check_file(self, path: Path) -> tuple[bytes, int] | None:
        """(key, length) of a valid file; streams the checksum so big values cost no RAM."""
        try:
            key = bytes.fromhex(path.stem)
            if len(key) != 16 or path.parent.name != path.stem[:2]:
                return None
            with open(path, "rb") as f:
                header = f.read(FILE_HEADER.size)
                if len(header) != FILE_HEADER.size:
                    return None
                magic, version, _, file_key, length, checksum, _ = FILE_HEADER.unpack(header)
                if magic != FILE_MAGIC or version != FILE_VERSION or file_key != key:
                    return None
                digest, seen = xxhash.xxh3_64(), 0
                while chunk := f.read(_VERIFY_CHUNK):
                    digest.update(chunk)
                    seen += len(chunk)
        except (OSError, ValueError):
            return None
        if seen != length or digest.intdigest() != checksum:  # short, long, or corrupt
            return None
        return key, length
