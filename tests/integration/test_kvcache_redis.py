"""The cache against a real redis-server.

Backend contract, password/db/TLS, a stalled server, kill and restart, corruption.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from kvmesh.common.errors import AuthError, TransportError
from kvmesh.common.hashing import NO_EXTRAS, ChainSpec, KVLayout, prefix_hashes, storage_key
from kvmesh.common.procs import (
    ManagedProcess,
    RedisServer,
    find_free_port,
    redis_server_path,
    tcp_ready,
    wait_until,
)
from kvmesh.kvcache import CacheConfig, KVChunk, LookupResult, TieredKVCache
from kvmesh.kvcache.l2.redis_backend import RedisL2Backend, redact_url, redis_key
from kvmesh.kvcache.serde import encode

pytestmark = pytest.mark.integration

CS = 4
SPEC = ChainSpec("redis-it", chunk_size=CS)
LAYOUT = KVLayout("bfloat16", 2, 2, 4)
SHAPE = (2, 2, CS, 2, 4)
TOKENS = list(range(8 * CS))


def chunk(i: int) -> KVChunk:
    return KVChunk.from_array(np.full(SHAPE, i, dtype=np.uint16), "bfloat16")


def values(chunks: list[KVChunk]) -> list[int]:
    return [int(c.as_numpy().flat[0]) for c in chunks]


def key(h: bytes) -> bytes:
    return storage_key(h, LAYOUT, SPEC.seed)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = RedisServer(password="hunter2").start()
    yield srv
    srv.close()


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(host=server.host, port=server.port, password=server.password)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="module")
def hashes() -> list[bytes]:
    return prefix_hashes(TOKENS, SPEC)


def make(url: str, **cfg: object) -> TieredKVCache:
    cfg.setdefault("l2_deadline_s", 2.0)  # generous unless the test is about deadlines
    config = CacheConfig(chunk_size=CS, l1_size_bytes=1 << 20, l2_url=url, **cfg)
    return TieredKVCache(config, SPEC, LAYOUT)


async def _contract(url: str) -> tuple:
    backend = RedisL2Backend.from_url(url)
    k = [bytes([i]) * 16 for i in range(4)]
    try:
        await backend.put_many([(k[0], b"first"), (k[1], memoryview(b"second"))])
        await backend.put_many([(k[0], b"overwrite?")])  # NX: existing entries are kept
        return (
            await backend.exists_prefix(k),
            await backend.exists_prefix([k[2], k[0]]),
            await backend.exists_prefix([]),
            await backend.get_many([k[0], k[2], k[1]]),
            await backend.get_many([]),
        )
    finally:
        await backend.close()
        await backend.close()  # idempotent


def test_backend_contract_and_key_format(server: RedisServer, raw: redis.Redis) -> None:
    assert asyncio.run(_contract(server.url)) == (2, 0, 0, [b"first", None, b"second"], [])
    assert sorted(raw.keys("*")) == sorted(redis_key(bytes([i]) * 16) for i in (0, 1))
    assert redis_key(bytes(16)) == b"kvmesh:v1:" + b"00" * 16


def test_password_is_redacted_and_db_number_is_used(server: RedisServer, raw: redis.Redis) -> None:
    url = f"redis://:hunter2@{server.host}:{server.port}/3"
    backend = RedisL2Backend.from_url(url)
    assert (
        backend.url == f"redis://:***@{server.host}:{server.port}/3"
        and "hunter2" not in backend.url
    )
    assert (
        redact_url("rediss://user:pw@h:1/0?ssl_cert_reqs=none")
        == "rediss://user:***@h:1/0?ssl_cert_reqs=none"
    )

    async def put() -> None:
        await backend.put_many([(bytes(16), b"v")])
        await backend.close()

    asyncio.run(put())
    db3 = redis.Redis(host=server.host, port=server.port, password="hunter2", db=3)
    assert db3.keys("*") == [redis_key(bytes(16))] and raw.keys("*") == []
    db3.flushdb()
    db3.close()


def test_wrong_password_is_auth_error_and_a_quiet_miss_in_the_cache(
    server: RedisServer, hashes: list[bytes]
) -> None:
    bad = f"redis://:wrong@{server.host}:{server.port}/0"

    async def ping() -> None:
        backend = RedisL2Backend.from_url(bad)
        try:
            await backend.ping()
        finally:
            await backend.close()

    with pytest.raises(AuthError):
        asyncio.run(ping())
    with make(bad, l2_deadline_s=1.0) as cache:
        cache.store_hashes(hashes[:1], [chunk(0)])
        assert cache.flush(10.0)
        assert cache.lookup_hashes(hashes) == LookupResult(1, 0)
        stats = cache.stats()
        assert (stats["l2_errors"], stats["l2_dropped_writes_error"]) == (
            2,
            1,
        )  # the put, the lookup


def test_unreachable_redis_is_transport_error() -> None:
    async def ping() -> None:
        backend = RedisL2Backend.from_url(f"redis://127.0.0.1:{find_free_port()}/0")
        try:
            await backend.ping()
        finally:
            await backend.close()

    with pytest.raises(TransportError):
        asyncio.run(ping())


def test_two_caches_share_through_redis(
    server: RedisServer, raw: redis.Redis, hashes: list[bytes]
) -> None:
    with make(server.url) as writer:
        assert writer.store(TOKENS, NO_EXTRAS, [chunk(i) for i in range(4)]) == 4
        assert writer.flush(10.0)
    with make(server.url) as reader:
        assert reader.lookup_hashes(hashes) == LookupResult(0, 4)
        with reader.read(hashes) as got:
            assert values(got) == [0, 1, 2, 3]
        assert reader.lookup_hashes(hashes) == LookupResult(4, 0)
        assert reader.stats()["l2_read_bytes"] == 4 * chunk(0).nbytes


def test_corrupt_value_in_redis_is_a_counted_miss(
    server: RedisServer, raw: redis.Redis, hashes: list[bytes]
) -> None:
    good = bytes(encode("bfloat16", SHAPE, np.full(SHAPE, 5, dtype=np.uint16)))
    raw.set(redis_key(key(hashes[0])), good)
    raw.set(redis_key(key(hashes[1])), good[:-3])  # truncated
    raw.set(redis_key(key(hashes[2])), good)
    with make(server.url) as cache:
        assert cache.lookup_hashes(hashes) == LookupResult(0, 3)
        with cache.read(hashes) as got:
            assert values(got) == [5]
        assert cache.stats()["l2_corrupt_entries"] == 1
        wait_until(lambda: not raw.exists(redis_key(key(hashes[1]))), 5.0, "corrupt key deleted")


def test_stalled_redis_hits_the_deadline(
    server: RedisServer, raw: redis.Redis, hashes: list[bytes]
) -> None:
    raw.set(
        redis_key(key(hashes[0])),
        bytes(encode("bfloat16", SHAPE, np.zeros(SHAPE, dtype=np.uint16))),
    )
    with make(server.url, l2_deadline_s=0.05, l2_breaker_failure_threshold=100) as cache:
        assert cache.lookup_hashes(hashes) == LookupResult(0, 1)  # connected and warm
        assert server.process is not None
        server.process.signal(signal.SIGSTOP)  # the server stops answering, the socket stays open
        try:
            assert cache.lookup_hashes(hashes) == LookupResult(0, 0)
            with cache.read(hashes) as got:
                assert got == []
        finally:
            server.process.signal(signal.SIGCONT)
        assert cache.stats()["l2_timeouts"] == 2


def test_killing_redis_mid_run_serves_l1_then_reconnects(hashes: list[bytes]) -> None:
    srv = RedisServer().start()
    try:
        with make(srv.url, l2_breaker_reset_s=0.05) as cache:
            cache.store_hashes(hashes[:4], [chunk(i) for i in range(4)])
            assert cache.flush(10.0)
            cache.l1.clear()
            cache.store_hashes(hashes[:2], [chunk(0), chunk(1)])  # L1 holds 0,1; L2 holds 0-3
            assert cache.lookup_hashes(hashes) == LookupResult(2, 2)
            srv.process.kill()  # type: ignore[union-attr]
            for _ in range(5):
                assert cache.lookup_hashes(hashes) == LookupResult(2, 0)
                with cache.read(hashes) as got:
                    assert values(got) == [0, 1]
            stats = cache.stats()
            assert (
                stats["l2_errors"] >= 3
                and stats["l2_breaker_opened"] == 1
                and not cache.l2_available
            )
            srv.start()  # same port, empty (no persistence)
            wait_until(lambda: cache.l2_available, 10.0, "cache reconnects to redis")
            assert cache.stats()["l2_reconnects"] >= 1
            cache.store_hashes(hashes[4:5], [chunk(4)])
            assert cache.flush(10.0)
            cache.l1.clear()
            assert cache.lookup_hashes(hashes[4:5]) == LookupResult(0, 1)
    finally:
        srv.close()


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[int, Path]]:
    tmp = tempfile.TemporaryDirectory(prefix="kvmesh-tls-")
    d = Path(tmp.name)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    port = find_free_port()
    proc = ManagedProcess(
        [
            redis_server_path(),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(d / "cert.pem"),
            "--tls-key-file",
            str(d / "key.pem"),
            "--tls-ca-cert-file",
            str(d / "cert.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "tlspw",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(d),
        ],
        "redis-tls",
        log_path=d / "redis.log",
    ).start()
    try:
        wait_until(
            lambda: tcp_ready("127.0.0.1", port), 20.0, "redis-server (TLS)", alive=proc.alive
        )
        yield port, d / "cert.pem"
    finally:
        proc.stop()
        tmp.cleanup()


def test_rediss_with_tls_password_and_ca(tls_server: tuple[int, Path], hashes: list[bytes]) -> None:
    port, ca = tls_server
    url = f"rediss://:tlspw@127.0.0.1:{port}/1?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    with make(url, l2_deadline_s=2.0) as writer:
        writer.store_hashes(hashes[:2], [chunk(0), chunk(1)])
        assert writer.flush(10.0)
        assert writer.stats()["l2_errors"] == 0
    with make(url, l2_deadline_s=2.0) as reader, reader.read(hashes) as got:
        assert values(got) == [0, 1]
