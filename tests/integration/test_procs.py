"""The child-server lifecycle shared by RedisServer and StoreProcess (real processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmesh.common.errors import KvmeshError, ProcessStartError
from kvmesh.common.procs import RedisServer, tcp_ready

pytestmark = pytest.mark.integration


def test_a_child_that_exits_before_ready_raises_with_its_log_and_is_gone(tmp_path: Path) -> None:
    server = RedisServer(maxmemory_bytes=-5, log_dir=tmp_path)  # redis-server refuses to start
    with pytest.raises(ProcessStartError) as info:
        server.start(timeout_s=20)
    assert isinstance(info.value, KvmeshError) and isinstance(info.value, RuntimeError)
    message = str(info.value)
    assert "process exited before it was ready" in message and "--- redis log tail ---" in message
    assert (tmp_path / "redis.log").read_text() in message
    assert server.process is None
    server.close()


def test_restart_on_the_same_port_and_log_dir(tmp_path: Path) -> None:
    server = RedisServer(log_dir=tmp_path).start()
    try:
        port = server.port
        assert server.stop() is not None and not tcp_ready(server.host, port)
        server.start()
        assert server.port == port and tcp_ready(server.host, port)
        assert (tmp_path / "redis.log").is_file()
    finally:
        server.close()
