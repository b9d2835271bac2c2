"""The shared-memory arena that holds every memory-tier value.

Values live in one file on a tmpfs (``/dev/shm``), mapped by the server
read-write and by same-host clients read-only. The server sends GET replies
straight out of the mapping (no user-space copy) and a same-host client reads a
leased value at its offset with one ``memcpy``.

Segment layout::

    0                 64                4096                             4096 + capacity
    +-----------------+-----------------+--------------------------------+
    | magic "KVMSHM1\\0"| nonce (16 B)... | values, placed by the allocator |
    +-----------------+-----------------+--------------------------------+

The nonce is announced in the PING reply. A client that maps the file named
there and finds the same nonce knows it shares the server's memory (not just a
path name in another container), otherwise it silently stays on TCP.
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import secrets
from pathlib import Path

SEGMENT_MAGIC = b"KVMSHM1\x00"
DATA_OFFSET = 4096
"""Where values start; the first page holds the magic and the nonce."""
NONCE_SIZE = 16
ALIGNMENT = 64
"""Every allocation starts on a cache line, so copies out of it are aligned."""


def _align(size: int) -> int:
    return (size + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


class FirstFitAllocator:
    """Address-ordered first-fit allocator over ``[base, base + capacity)``.

    Free blocks are kept sorted by address and coalesced with both neighbours
    on free, so fragmentation stays bounded by the live set. ``alloc`` returns
    ``None`` when no single free block fits; the caller then evicts and retries.
    """

    def __init__(self, base: int, capacity: int) -> None:
        if capacity < ALIGNMENT or base % ALIGNMENT:
            raise ValueError("capacity must be >= ALIGNMENT and base aligned")
        self.base = base
        self.capacity = capacity - capacity % ALIGNMENT
        self._starts: list[int] = [base]
        self._sizes: dict[int, int] = {base: self.capacity}
        self._by_end: dict[int, int] = {base + self.capacity: base}
        self.used_bytes = 0

    @staticmethod
    def block_size(size: int) -> int:
        """Bytes actually reserved for a request of ``size`` bytes."""
        return _align(max(size, 1))

    def alloc(self, size: int) -> int | None:
        """Offset of a fresh block of at least ``size`` bytes, or ``None`` if none fits."""
        need = self.block_size(size)
        for i, start in enumerate(self._starts):
            have = self._sizes[start]
            if have < need:
                continue
            del self._by_end[start + have]
            del self._sizes[start]
            if have == need:
                del self._starts[i]
            else:
                rest = start + need
                self._starts[i] = rest
                self._sizes[rest] = have - need
                self._by_end[start + have] = rest
            self.used_bytes += need
            return start
        return None

    def free(self, offset: int, size: int) -> None:
        """Return a block obtained from :meth:`alloc` with the same ``size``."""
        length = self.block_size(size)
        self.used_bytes -= length
        start, end = offset, offset + length
        left = self._by_end.pop(start, None)
        if left is not None:  # merge with the free block just before
            self._starts.pop(bisect.bisect_left(self._starts, left))
            del self._sizes[left]
            start = left
        right_size = self._sizes.pop(end, None)
        if right_size is not None:  # merge with the free block just after
            self._starts.pop(bisect.bisect_left(self._starts, end))
            del self._by_end[end + right_size]
            end += right_size
        bisect.insort(self._starts, start)
        self._sizes[start] = end - start
        self._by_end[end] = start

    def free_blocks(self) -> list[tuple[int, int]]:
        """(offset, size) of every free block, by address (for tests and stats)."""
        return [(s, self._sizes[s]) for s in self._starts]


def reap_stale_segments(directory: Path) -> list[Path]:
    """Unlink segments left by store processes that died without cleaning up (SIGKILL).

    Segment names carry the owner's pid; a segment whose pid no longer exists
    is garbage that would otherwise hold its RAM on the tmpfs forever.
    """
    reaped: list[Path] = []
    for path in directory.glob("kvmesh-*-*-*"):
        try:
            pid = int(path.name.rsplit("-", 2)[1])
            os.kill(pid, 0)
        except ValueError:
            continue  # not one of ours
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                path.unlink()
                reaped.append(path)
        except PermissionError:
            continue  # alive, another user's process
    return reaped


class ShmArena:
    """A named shared-memory segment with an allocator over its data area."""

    def __init__(
        self, directory: Path, capacity: int, name_hint: str = "store", prefault: bool = False
    ) -> None:
        self.nonce = secrets.token_bytes(NONCE_SIZE)
        self.path = directory / f"kvmesh-{name_hint}-{os.getpid()}-{secrets.token_hex(4)}"
        self.size = DATA_OFFSET + capacity
        # 0600: only processes of the same user may map the values.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, self.size)
            flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if prefault else 0)
            self._mmap = mmap.mmap(fd, self.size, flags=flags)
        finally:
            os.close(fd)
        self.view = memoryview(self._mmap)
        self.view[: len(SEGMENT_MAGIC)] = SEGMENT_MAGIC
        self.view[len(SEGMENT_MAGIC):len(SEGMENT_MAGIC) + NONCE_SIZE] = self.nonce
        self.allocator = FirstFitAllocator(DATA_OFFSET, capacity)

    def slice(self, offset: int, length: int) -> memoryview:
        """A writable view of ``length`` bytes at ``offset`` (no copy)."""
        return self.view[offset:offset + length]

    def close(self) -> None:
        """Unmap and unlink the segment; clients that still map it keep their mapping."""
        with contextlib.suppress(BufferError):
            self.view.release()
            self._mmap.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class ShmReader:
    """A client's read-only mapping of a server's segment."""

    def __init__(self, path: str, size: int, nonce: bytes) -> None:
        """Map ``path``; ``OSError`` or ``ValueError`` if it is not the announced segment."""
        fd = os.open(path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_size != size:
                raise ValueError("segment size differs from the announced size")
            self._mmap = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.view = memoryview(self._mmap)
        found = bytes(self.view[len(SEGMENT_MAGIC):len(SEGMENT_MAGIC) + NONCE_SIZE])
        if bytes(self.view[: len(SEGMENT_MAGIC)]) != SEGMENT_MAGIC or found != nonce:
            self.close()
            raise ValueError("segment nonce differs: not the server's memory")

    def close(self) -> None:
        """Unmap."""
        with contextlib.suppress(BufferError):
            self.view.release()
            self._mmap.close()


def host_id() -> str:
    """An id of this kernel's boot: equal for two processes only on the same host.

    The boot id is kernel-wide, so containers of one node agree on it even when
    their images carry different ``/etc/machine-id`` files. It only pre-screens:
    the segment nonce decides whether memory is really shared.
    """
    for path in ("/proc/sys/kernel/random/boot_id", "/etc/machine-id"):
        with contextlib.suppress(OSError):
            text = Path(path).read_text().strip()
            if text:
                return text
    return os.uname().nodename
