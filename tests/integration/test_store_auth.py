"""Auth on a real `kvmesh store`: token enforced, compared before any body is read."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from kvmesh.common.errors import AuthError
from kvmesh.store.client import TOKEN_ENV, StoreL2Backend
from kvmesh.store.process import StoreProcess
from kvmesh.store.protocol import HEADER_SIZE, Header, Op, Status, unpack_header

pytestmark = pytest.mark.integration
TOKEN = "correct horse battery staple"


@pytest.fixture(scope="module")
def server() -> Iterator[StoreProcess]:
    proc = StoreProcess(memory_size="8MiB", token=TOKEN).start()
    yield proc
    proc.close()


async def test_right_token_from_url_or_env(
    server: StoreProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = os.urandom(16)
    backend = StoreL2Backend.from_url(server.url)  # kvmesh://:TOKEN@host:port
    try:
        await backend.put_many([(key, b"secret value")])
    finally:
        await backend.close()
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    backend = StoreL2Backend.from_url(f"kvmesh://127.0.0.1:{server.port}")
    try:
        got = await backend.get_many([key])
        assert [bytes(v) for v in got if v is not None] == [b"secret value"]
    finally:
        await backend.close()


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_missing_or_wrong_token_is_refused(
    server: StoreProcess, token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    auth = f":{token}@" if token else ""
    backend = StoreL2Backend.from_url(f"kvmesh://{auth}127.0.0.1:{server.port}")
    try:
        with pytest.raises(AuthError):
            await backend.get_many([os.urandom(16)])
        with pytest.raises(AuthError):
            await backend.put_many([(os.urandom(16), b"x")])
    finally:
        await backend.close()


def test_unauthenticated_request_is_refused_after_its_header_alone(server: StoreProcess) -> None:
    # A PUT announcing a 512 MiB body, and no body at all: the server must answer
    # from the header alone, without waiting for (or reading) any body byte.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(Header(op=Op.PUT_MANY, count=1, body_len=512 << 20).pack())
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    header = unpack_header(reply[:HEADER_SIZE])
    assert header.status == Status.AUTH_FAILED
    assert reply[HEADER_SIZE:] == b"authentication required"


def test_auth_frame_must_be_exactly_a_digest(server: StoreProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(Header(op=Op.AUTH, body_len=1 << 20).pack())
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert unpack_header(reply[:HEADER_SIZE]).status == Status.MALFORMED
