"""Scheduler -> worker lookups over ZeroMQ IPC, with a deadline."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from kvmesh.common.procs import wait_until
from kvmesh.connector.lookup_ipc import LookupClient, LookupServer, lookup_endpoint


def test_round_trip(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path / 'lookup.sock'}"
    asked: list[list[bytes]] = []

    def lookup(hashes: list[bytes]) -> tuple[int, int]:
        asked.append(hashes)
        return 1, len(hashes)

    server = LookupServer(endpoint, lookup)
    client = LookupClient(endpoint, timeout_s=5)
    try:
        assert client.lookup([b"a" * 16, b"b" * 16, b"c" * 16]) == (1, 3)
        assert asked == [[b"a" * 16, b"b" * 16, b"c" * 16]]
    finally:
        client.close()
        server.close()
    assert not (tmp_path / "lookup.sock").exists()


def test_no_server_is_a_miss_within_the_deadline_and_the_client_recovers(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path / 'late.sock'}"
    client = LookupClient(endpoint, timeout_s=0.05)
    try:
        assert client.lookup([b"x" * 16]) == (0, 0)
        assert client.failures == 1
        server = LookupServer(endpoint, lambda hashes: (0, len(hashes)))
        try:
            # The rebuilt socket connects asynchronously: poll until the server answers in time.
            pair = [b"x" * 16, b"y" * 16]
            wait_until(lambda: client.lookup(pair) == (0, 2), 10, "lookup recovery")
        finally:
            server.close()
    finally:
        client.close()


def test_a_failing_lookup_or_bad_request_answers_a_miss(tmp_path: Path) -> None:
    import zmq

    endpoint = f"ipc://{tmp_path / 'bad.sock'}"

    def broken(hashes: list[bytes]) -> tuple[int, int]:
        raise RuntimeError("cache exploded")

    server = LookupServer(endpoint, broken)
    sock = zmq.Context.instance().socket(zmq.REQ)
    try:
        sock.connect(endpoint)
        sock.send(msgpack.packb([99, []]))  # another version
        assert msgpack.unpackb(sock.recv()) == [1, 0, 0]
        client = LookupClient(endpoint, timeout_s=5)
        assert client.lookup([b"z" * 16]) == (0, 0)
        client.close()
    finally:
        sock.close(linger=0)
        server.close()


def test_endpoint_is_per_engine_and_filesystem_safe() -> None:
    assert lookup_endpoint("a/b c") != lookup_endpoint("a-b-c")
    # Linux: an abstract socket, so a killed worker leaves no file behind.
    assert lookup_endpoint("e1") == "ipc://@kvmesh-lookup-e1"
    with pytest.raises(ValueError, match="timeout_s"):
        LookupClient("ipc:///tmp/x.sock", timeout_s=0)


def test_warm_up_runs_on_the_server_thread_before_serving(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path / 'warm.sock'}"
    order: list[str] = []
    server = LookupServer(
        endpoint, lambda hashes: (order.append("lookup"), (0, 0))[1], warm_up=lambda: order.append("warm")
    )
    client = LookupClient(endpoint, timeout_s=5)
    try:
        assert client.lookup([b"q" * 16]) == (0, 0)
        assert order == ["warm", "lookup"]
    finally:
        client.close()
        server.close()


def test_abstract_endpoint_round_trip() -> None:
    endpoint = lookup_endpoint("unit-test-abstract")
    server = LookupServer(endpoint, lambda hashes: (len(hashes), len(hashes)))
    client = LookupClient(endpoint, timeout_s=5)
    try:
        assert client.lookup([b"k" * 16]) == (1, 1)
    finally:
        client.close()
        server.close()
