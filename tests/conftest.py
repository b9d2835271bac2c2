"""Shared fixtures. Each area adds fixtures in its own delimited block below.

Servers are real processes on free loopback ports; readiness is polled.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvmesh.common.procs import RedisServer

# ---- common (lead) ---------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, shared by one test module.

    Tests may ``stop()`` and ``start()`` it again (same port) to simulate an outage.
    """
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> RedisServer:
    """The module's redis-server, running and emptied for this test."""
    import redis

    if redis_server.process is None or not redis_server.process.alive():
        redis_server.start()
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server


# ---- connector (engineer E) --------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A ``kvmesh model create --preset tiny`` directory, built once per session (needs torch)."""
    pytest.importorskip("transformers", reason="`make vllm` installs transformers and torch")
    from kvmesh.connector.local_model import create_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    create_model(path, "tiny", seed=0)
    return path


# ---- end connector -----------------------------------------------------------
