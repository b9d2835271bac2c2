"""Start a real ``kvmesh store`` as a child process (tests, benchmarks, ``kvmesh up``).

Readiness is a protocol PING (authenticated if a token is set), polled, never slept for.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kvmesh.common.errors import KvmeshError
from kvmesh.common.procs import LoopbackServer
from kvmesh.store.config import StoreConfig
from kvmesh.store.protocol import AUTH_DIGEST_SIZE, HEADER_SIZE, Header, Op, Status, unpack_header
from kvmesh.store.shm import reap_stale_segments

SHM_DIR = StoreConfig.shm_dir


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def ping_sync(host: str, port: int, token: str | None = None, timeout_s: float = 1.0) -> bool:
    """True if a store answers PING at ``host:port`` now (blocking, for readiness polls)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            if token is not None:
                digest = hashlib.sha256(token.encode()).digest()
                sock.sendall(Header(op=Op.AUTH, body_len=AUTH_DIGEST_SIZE).pack() + digest)
                if unpack_header(_recv_exact(sock, HEADER_SIZE)).status != Status.OK:
                    return False
            sock.sendall(Header(op=Op.PING).pack())
            header = unpack_header(_recv_exact(sock, HEADER_SIZE))
            _recv_exact(sock, header.body_len)
            return header.status == Status.OK
    except (OSError, struct.error, KvmeshError):  # down, or not a store on that port
        return False


@dataclass
class StoreProcess(LoopbackServer):
    """A ``kvmesh store`` child on a loopback port."""

    memory_size: str = "256MiB"
    disk_path: Path | None = None
    disk_size: str = "1GiB"
    token: str | None = None
    extra_args: list[str] = field(default_factory=list)

    name = "store"

    @property
    def url(self) -> str:
        """The ``kvmesh://`` URL of this server (with its token)."""
        auth = f":{self.token}@" if self.token else ""
        return f"kvmesh://{auth}{self.host}:{self.port}"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "kvmesh", "store", "--host", self.host,
                "--port", str(self.port), "--memory-size", self.memory_size]
        if self.disk_path is not None:
            argv += ["--disk-path", str(self.disk_path), "--disk-size", self.disk_size]
        if self.token is not None:
            token_file = self.workdir() / "token"
            token_file.write_text(self.token)
            token_file.chmod(0o600)
            argv += ["--auth-token-file", str(token_file)]
        return argv + self.extra_args

    def ready(self) -> bool:
        return ping_sync(self.host, self.port, self.token)

    def kill(self) -> None:
        """SIGKILL at once (a crash); its orphaned shared-memory segment is then removed."""
        super().kill()
        reap_stale_segments(SHM_DIR)


@contextlib.contextmanager
def store_process(**kwargs: object) -> Iterator[StoreProcess]:
    """Context manager around :class:`StoreProcess`."""
    server = StoreProcess(**kwargs).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.close()
