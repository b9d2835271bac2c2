"""Start and stop real child processes (redis-server, kvmesh store, workers).

Used by test fixtures, benchmarks and ``kvmesh up``. Readiness is always
polled (a TCP connect or an HTTP probe), never slept for. Children run in
their own process group so that stopping one never leaves grandchildren.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from kvmesh.common.errors import ProcessStartError


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tcp_ready(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """True if a TCP connection to ``host:port`` succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_ready(url: str, timeout_s: float = 1.0) -> bool:
    """True if ``GET url`` answers 2xx now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (loopback)
            return 200 <= resp.status < 300
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 0.02,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``predicate`` until true; ``TimeoutError`` naming ``what`` otherwise.

    ``alive`` lets the caller give up at once when the process being waited
    for has exited, instead of burning the whole timeout.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: process exited before it was ready")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not ready after {timeout_s:.1f}s")
        time.sleep(interval_s)
        interval_s = min(interval_s * 1.5, 0.5)


@dataclass
class ManagedProcess:
    """A child process in its own process group, stopped with SIGTERM then SIGKILL."""

    argv: Sequence[str]
    name: str
    env: dict[str, str] | None = None
    log_path: Path | None = None
    cwd: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ManagedProcess:
        """Launch the process; output goes to ``log_path`` (or is discarded)."""
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(  # noqa: S603 (argv is ours)
                list(self.argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
                start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        return self

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, num_bytes: int = 4000) -> str:
        """The end of the process's log, for error messages."""
        if not self.log_path or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-num_bytes:]
        return data.decode("utf-8", "replace")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group."""
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the group, wait, then SIGKILL; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
        # Reap any grandchildren still in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the group at once (to simulate a crash)."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)


@dataclass
class LoopbackServer:
    """A server child on a loopback port with a private work directory.

    Subclasses say how to start it (:meth:`argv`) and how to tell it is up
    (:meth:`ready`). ``stop()`` then ``start()`` restarts it on the same port,
    which tests use to simulate an outage; ``close()`` also removes the work
    directory.
    """

    port: int = 0
    host: str = "127.0.0.1"
    log_dir: Path | None = None
    """Where ``<name>.log`` goes (default: the work directory)."""
    process: ManagedProcess | None = field(default=None, init=False)
    _tmpdir: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    name = "server"
    """Used for the log file, the temporary directory and error messages."""

    def argv(self) -> list[str]:
        """The command line; may write files into :meth:`workdir`."""
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the server answers."""
        raise NotImplementedError

    def workdir(self) -> Path:
        """The server's private directory (created on first use)."""
        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix=f"kvmesh-{self.name}-")
        return Path(self._tmpdir.name)

    def start(self, timeout_s: float = 30.0) -> Self:
        """Start (or restart on the same port) and poll until :meth:`ready`.

        Raises :class:`ProcessStartError` (with the log's tail) if it never gets there.
        """
        if not self.port:
            self.port = find_free_port(self.host)
        log = (self.log_dir or self.workdir()) / f"{self.name}.log"
        self.process = ManagedProcess(self.argv(), f"{self.name} :{self.port}", log_path=log).start()
        try:
            wait_until(self.ready, timeout_s, f"{self.name} on port {self.port}", alive=self.process.alive)
        except (TimeoutError, RuntimeError) as exc:
            tail = self.process.log_tail()
            self.stop()
            raise ProcessStartError(f"{exc}\n--- {self.name} log tail ---\n{tail}") from None
        return self

    def stop(self) -> int | None:
        """SIGTERM (graceful) and wait; returns the exit status."""
        if self.process is None:
            return None
        status = self.process.stop()
        self.process = None
        return status

    def kill(self) -> None:
        """SIGKILL at once (a crash)."""
        if self.process is not None:
            self.process.kill()
            self.process = None

    def log_tail(self) -> str:
        """The end of the server's log, for error messages."""
        return self.process.log_tail() if self.process else ""

    def close(self) -> None:
        """Stop and remove the work directory."""
        self.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


def redis_server_path() -> str:
    """Path of ``redis-server``; ``FileNotFoundError`` with the fix if missing."""
    path = shutil.which("redis-server")
    if path is None:
        raise FileNotFoundError("redis-server not found; `make redis` installs Debian's package")
    return path


@dataclass
class RedisServer(LoopbackServer):
    """A private redis-server on a loopback port, with no persistence."""

    password: str | None = None
    maxmemory_bytes: int = 0

    name = "redis"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def argv(self) -> list[str]:
        argv = [
            redis_server_path(), "--port", str(self.port), "--bind", self.host,
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir()),
            "--protected-mode", "no", "--loglevel", "warning",
            "--proto-max-bulk-len", str(1 << 30),
        ]
        if self.password:
            argv += ["--requirepass", self.password]
        if self.maxmemory_bytes:
            argv += ["--maxmemory", str(self.maxmemory_bytes), "--maxmemory-policy", "allkeys-lru"]
        return argv

    def ready(self) -> bool:
        return tcp_ready(self.host, self.port)


@contextlib.contextmanager
def redis_server(**kwargs: object) -> Iterator[RedisServer]:
    """Context manager around :class:`RedisServer`."""
    server = RedisServer(**kwargs).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.close()
