"""The server in-process (same event loop as the test): graceful shutdown semantics."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry

from kvmesh.store.config import MiB, StoreConfig
from kvmesh.store.protocol import HEADER_SIZE, Header, Op, PutResult, pack_put_table
from kvmesh.store.server import StoreServer


async def test_shutdown_finishes_busy_request_and_drops_idle_ones(tmp_path: Path) -> None:
    config = StoreConfig(port=0, memory_size_bytes=4 * MiB, shm_dir=tmp_path)
    server = StoreServer(config, CollectorRegistry())
    await server.start()
    busy_r, busy_w = await asyncio.open_connection("127.0.0.1", server.port)
    idle_r, _idle_w = await asyncio.open_connection("127.0.0.1", server.port)
    value = b"v" * 100_000
    key = bytes(range(16))
    table = pack_put_table([(key, len(value))])
    busy_w.write(Header(op=Op.PUT_MANY, count=1, body_len=len(table) + len(value)).pack()
                 + table + value[:50_000])
    await busy_w.drain()
    # Wait (by polling) until the server is inside the request.
    while not any(conn.busy for conn in server._tasks.values()):
        await asyncio.sleep(0.005)
    stopping = asyncio.create_task(server.shutdown())
    assert await idle_r.read() == b""  # the idle connection is closed at once
    busy_w.write(value[50_000:])
    await busy_w.drain()
    reply = Header(op=Op.PUT_MANY, count=1, body_len=1)
    assert await busy_r.readexactly(HEADER_SIZE + 1) == reply.pack() + bytes([PutResult.STORED])
    await asyncio.wait_for(stopping, 10)
    assert await busy_r.read() == b""  # then the server closes it
    assert not server.store.arena.path.exists()
    busy_w.close()
