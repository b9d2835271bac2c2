"""A real `kvmesh store` process: round trips, limits, malformed input, leases, shutdown."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmesh.common.errors import BackendUnavailableError, ProtocolError, VersionMismatchError
from kvmesh.common.procs import find_free_port
from kvmesh.store.client import StoreL2Backend
from kvmesh.store.connection import NodeConnection
from kvmesh.store.process import StoreProcess
from kvmesh.store.protocol import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    Header,
    Op,
    ServerInfo,
    Status,
    pack_keys,
    unpack_header,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server() -> Iterator[StoreProcess]:
    proc = StoreProcess(memory_size="64MiB", extra_args=["--max-value-size", "4MiB",
                                                         "--max-request-size", "32MiB",
                                                         "--lease-ttl", "300ms"])
    proc.start()
    yield proc
    proc.close()


def keys(n: int) -> list[bytes]:
    return [os.urandom(16) for _ in range(n)]


def raw_exchange(port: int, data: bytes) -> tuple[Header | None, bytes, bool]:
    """Send bytes; return the reply header, its body, and whether the server then closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        buf = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    if len(buf) < HEADER_SIZE:
        return None, buf, True
    header = unpack_header(buf[:HEADER_SIZE])
    return header, buf[HEADER_SIZE:], True


@pytest.mark.parametrize("shm", [False, True])
async def test_round_trip(server: StoreProcess, shm: bool) -> None:
    backend = StoreL2Backend.from_url(f"{server.url}?shm={int(shm)}")
    try:
        ks = keys(4)
        values = [b"", b"a", os.urandom(3 << 20), os.urandom(100_000)]
        await backend.put_many(list(zip(ks, values)))
        got = await backend.get_many([ks[2], os.urandom(16), *ks])
        assert [None if v is None else bytes(v) for v in got] == [values[2], None, *values]
        assert backend.shm_active == [shm]
        assert await backend.exists_prefix([ks[0], ks[1], os.urandom(16), ks[2]]) == 2
        assert await backend.exists_prefix([]) == 0
        await backend.delete_many(ks[:2])
        assert await backend.exists_prefix(ks) == 0
        assert await backend.exists_prefix(ks[2:]) == 2
    finally:
        await backend.close()
    await backend.close()  # idempotent
    with pytest.raises(BackendUnavailableError, match="closed"):
        await backend.get_many(ks)


async def test_value_over_limit_is_skipped_not_fatal(server: StoreProcess) -> None:
    backend = StoreL2Backend.from_url(server.url)
    try:
        small, big = keys(2)
        await backend.put_many([(big, bytes(5 << 20)), (small, b"ok")])
        got = await backend.get_many([big, small])
        assert got[0] is None and bytes(got[1]) == b"ok"  # type: ignore[arg-type]
    finally:
        await backend.close()


async def test_batches_over_request_limit_are_split(server: StoreProcess) -> None:
    backend = StoreL2Backend.from_url(server.url)
    try:
        ks = keys(12)
        values = [os.urandom(3 << 20) for _ in ks]  # 36 MiB > the 32 MiB request limit
        await backend.put_many(list(zip(ks, values)))
        got = await backend.get_many(ks)
        assert [bytes(v) for v in got if v is not None] == values
    finally:
        await backend.close()


@pytest.mark.parametrize("frame, status", [
    (HEADER.pack(MAGIC, 2, Op.PING, 0, 0, 0, 0, 0), Status.VERSION_MISMATCH),
    (HEADER.pack(b"HTTP", 1, Op.PING, 0, 0, 0, 0, 0), Status.MALFORMED),
    (Header(op=77).pack(), Status.UNKNOWN_OP),
    (Header(op=Op.GET_MANY, count=3, body_len=47).pack(), Status.MALFORMED),
    (Header(op=Op.GET_MANY, count=1 << 30, body_len=16 << 30).pack(), Status.TOO_LARGE),
    (Header(op=Op.PUT_MANY, count=1, body_len=1 << 40).pack(), Status.TOO_LARGE),
    (Header(op=Op.PUT_MANY, count=1, body_len=24 + 5).pack()
     + b"k" * 16 + (6).to_bytes(8, "little") + b"12345", Status.MALFORMED),
    (Header(op=Op.PUT_MANY, count=1, body_len=24 + (5 << 20)).pack()
     + b"k" * 16 + (5 << 20).to_bytes(8, "little"), Status.TOO_LARGE),
])
def test_bad_headers_get_an_error_reply_and_close(
    server: StoreProcess, frame: bytes, status: Status
) -> None:
    header, body, closed = raw_exchange(server.port, frame)
    assert header is not None and header.status == status and closed
    assert header.body_len == len(body) and body  # a message says what was wrong
    if status == Status.VERSION_MISMATCH:
        assert header.version == 1 and b"expected 1, got 2" in body


@pytest.mark.parametrize("frame, error, match", [
    (HEADER.pack(MAGIC, 2, Op.PING, 0, 0, 0, 0, 0), VersionMismatchError, "version mismatch"),
    (HEADER.pack(MAGIC, 1, 99, 0, 0, 0, 0, 0), ProtocolError, "UNKNOWN_OP"),
])
async def test_client_turns_error_replies_into_exceptions(
    server: StoreProcess, frame: bytes, error: type[Exception], match: str
) -> None:
    conn = await NodeConnection.open("127.0.0.1", server.port, 2.0)
    await conn._loop.sock_sendall(conn._sock, frame)
    with pytest.raises(error, match=match):
        await conn.recv_header(Op.PING)
    assert conn.broken


async def test_fuzzing_does_not_disturb_other_clients(server: StoreProcess) -> None:
    rng = random.Random(1234)
    backend = StoreL2Backend.from_url(server.url)
    try:
        ks, values = keys(3), [os.urandom(50_000) for _ in range(3)]
        await backend.put_many(list(zip(ks, values)))
        for i in range(150):
            if i % 3 == 0:  # pure noise
                blob = rng.randbytes(rng.randrange(1, 200))
            else:  # a plausible header with random fields, then noise
                blob = HEADER.pack(MAGIC, 1, rng.randrange(0, 12), rng.choice([0, 1, 2]), 0, 0,
                                   rng.randrange(0, 70000), rng.randrange(0, 4096))
                blob += rng.randbytes(rng.randrange(0, 300))
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(blob)
                sock.shutdown(socket.SHUT_WR)  # then EOF: the server must not wait forever
                while sock.recv(65536):
                    pass
            if i % 10 == 0:
                got = await backend.get_many(ks)
                assert [bytes(v) for v in got if v is not None] == values
        assert server.process is not None and server.process.alive()
        stats = await backend.stats()
        assert stats[f"127.0.0.1:{server.port}"]["tiers"]["memory"]["entries"] >= 3
    finally:
        await backend.close()


async def test_unreleased_lease_expires(server: StoreProcess) -> None:
    backend = StoreL2Backend.from_url(server.url)
    try:
        (k,) = keys(1)
        await backend.put_many([(k, b"pinned")])
        conn = await NodeConnection.open("127.0.0.1", server.port, 2.0)
        header, body = await conn.call(Op.LEASE_MANY, 1, [pack_keys([k])])
        assert header.count == 1 and int.from_bytes(body[:8], "little") > 0
        conn.close()  # a client that dies without RELEASE
        node = backend.nodes[0]
        assert (await node.stats())["leases_active"] >= 1
        # Poll STATS until the 300 ms lease has been reaped (never one fixed sleep).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (stats := await node.stats())["leases_active"] and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert stats["leases_active"] == 0 and stats["leases_expired"] >= 1
    finally:
        await backend.close()


def test_metrics_endpoint_and_sigterm(tmp_path: Path) -> None:
    metrics_port = find_free_port()
    proc = StoreProcess(memory_size="8MiB", extra_args=["--metrics-port", str(metrics_port)])
    proc.start()
    try:
        async def fill() -> ServerInfo:
            backend = StoreL2Backend.from_url(proc.url)
            try:
                await backend.put_many([(k, b"v" * 10) for k in keys(2)])
                return await backend.nodes[0].ping()
            finally:
                await backend.close()

        info = asyncio.run(fill())
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
            text = resp.read().decode()
        assert 'kvmesh_store_entries{tier="memory"} 2.0' in text
        assert 'kvmesh_store_bytes{tier="memory"} 20.0' in text
        assert 'kvmesh_store_operations_total{op="PUT_MANY"} 1.0' in text
        assert "kvmesh_store_request_seconds_bucket" in text
        assert info.shm_path is not None
        shm_path = Path(info.shm_path)
        assert shm_path.exists()
        assert proc.stop() == 0  # SIGTERM: graceful, exit status 0
        assert not shm_path.exists()
    finally:
        proc.close()
