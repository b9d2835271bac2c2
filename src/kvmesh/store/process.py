"""Start a real ``kvmesh store`` as a child process (tests, benchmarks, ``kvmesh up``).

Readiness is a protocol PING (authenticated if a token is set), polled, never slept for.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kvmesh.common.errors import KvmeshError
from kvmesh.common.procs import ManagedProcess, find_free_port, wait_until
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
class StoreProcess:
    """A ``kvmesh store`` child on a loopback port."""

    port: int = 0
    host: str = "127.0.0.1"
    memory_size: str = "256MiB"
    disk_path: Path | None = None
    disk_size: str = "1GiB"
    token: str | None = None
    extra_args: list[str] = field(default_factory=list)
    process: ManagedProcess | None = field(default=None, init=False)
    _tmpdir: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """The ``kvmesh://`` URL of this server (with its token)."""
        auth = f":{self.token}@" if self.token else ""
        return f"kvmesh://{auth}{self.host}:{self.port}"

    def argv(self) -> list[str]:
        assert self._tmpdir is not None
        argv = [sys.executable, "-m", "kvmesh", "store", "--host", self.host,
                "--port", str(self.port), "--memory-size", self.memory_size]
        if self.disk_path is not None:
            argv += ["--disk-path", str(self.disk_path), "--disk-size", self.disk_size]
        if self.token is not None:
            token_file = Path(self._tmpdir.name) / "token"
            token_file.write_text(self.token)
            token_file.chmod(0o600)
            argv += ["--auth-token-file", str(token_file)]
        return argv + self.extra_args

    def start(self, timeout_s: float = 30.0) -> StoreProcess:
        """Start (or restart on the same port) and wait until it answers PING."""
        if not self.port:
            self.port = find_free_port(self.host)
        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="kvmesh-store-")
        log = Path(self._tmpdir.name) / "store.log"
        self.process = ManagedProcess(self.argv(), f"kvmesh store :{self.port}", log_path=log)
        self.process.start()
        try:
            wait_until(lambda: ping_sync(self.host, self.port, self.token), timeout_s,
                       f"kvmesh store on port {self.port}", alive=self.process.alive)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}\n{self.process.log_tail()}") from None
        return self

    def stop(self) -> int | None:
        """SIGTERM (graceful) and wait; returns the exit status."""
        if self.process is None:
            return None
        status = self.process.stop()
        self.process = None
        return status

    def kill(self) -> None:
        """SIGKILL at once (a crash); its orphaned shared-memory segment is then removed."""
        if self.process is not None:
            self.process.kill()
            self.process = None
            reap_stale_segments(SHM_DIR)

    def log_tail(self) -> str:
        return self.process.log_tail() if self.process else ""

    def close(self) -> None:
        """Stop and remove the temporary directory."""
        self.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


@contextlib.contextmanager
def store_process(**kwargs: object) -> Iterator[StoreProcess]:
    """Context manager around :class:`StoreProcess`."""
    server = StoreProcess(**kwargs).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.close()
