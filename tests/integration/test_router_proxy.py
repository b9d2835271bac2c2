"""The router as a real process in front of real HTTP fake backends on loopback."""

from __future__ import annotations

import http.client
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from router_backends import Backend, Router, running_backends, running_router  # noqa: E402

from kvmesh.common.procs import ManagedProcess, http_ready, wait_until  # noqa: E402
from kvmesh.router.config import BackendSpec, RouterConfig  # noqa: E402
from kvmesh.router.endpoints import Endpoint  # noqa: E402
from kvmesh.router.kv_index import KVIndex  # noqa: E402
from kvmesh.router.policies.base import PolicyDeps, RoutingRequest  # noqa: E402
from kvmesh.router.policies.session import SessionPolicy  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def request(router: Router, method: str, path: str, body: bytes | dict | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=30)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    out = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    conn.close()
    return out


@pytest.fixture(scope="module")
def fleet():  # noqa: ANN201
    with running_backends(["b1", "b2", "b3"]) as backends:
        yield backends


@pytest.fixture(scope="module")
def router(fleet: dict[str, Backend], tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    args = ["--routing-strategy", "session", "--read-timeout", "1s", "--connect-timeout", "500ms",
            "--health-interval", "200ms", "--breaker-cooldown", "300ms", "--max-body-size", "64KiB"]
    for b in fleet.values():
        args += ["--backend", b.url]
    log = tmp_path_factory.mktemp("router") / "router.log"
    with running_router(args, log) as r:
        yield r


@pytest.fixture(autouse=True)
def _reset(fleet: dict[str, Backend]) -> None:
    for b in fleet.values():
        if b.proc.alive():
            b.control(mode="ok", healthy=True)


def ring_order(fleet: dict[str, Backend], key: str) -> list[str]:
    """Backend names in the order the session ring tries them for ``key`` (same code as the router)."""
    urls = sorted(b.url for b in fleet.values())
    cfg = RouterConfig(backends=tuple(BackendSpec(u) for u in urls), strategy="session")
    policy = SessionPolicy(cfg, PolicyDeps(KVIndex()))
    eps = [Endpoint(u) for u in urls]
    policy.set_members(set(urls))
    order = []
    while eps:
        ep = policy.select(RoutingRequest("/v1/completions", {}, {"x-session-id": key}), eps).endpoint
        order.append(next(b.name for b in fleet.values() if b.url == ep.url))
        eps.remove(ep)
    return order


def key_for(fleet: dict[str, Backend], first: str) -> tuple[str, list[str]]:
    """A session key whose ring order starts at backend ``first``."""
    for i in range(1000):
        order = ring_order(fleet, f"s{i}")
        if order[0] == first:
            return f"s{i}", order
    raise AssertionError("no key found")


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}]}


def test_chat_and_completion_pass_through(router: Router, fleet: dict[str, Backend]) -> None:
    key, order = key_for(fleet, "b2")
    status, headers, body = request(router, "POST", "/v1/chat/completions", CHAT, {"x-session-id": key})
    assert status == 200
    obj = json.loads(body)
    assert (obj["system_fingerprint"], obj["choices"][0]["message"]["content"]) == ("b2", "served by b2")
    assert headers["content-length"] == str(len(body))
    assert "server" not in headers
    status, _, body = request(router, "POST", "/v1/completions", {"model": "tiny", "prompt": "hi"},
                              {"x-session-id": key})
    assert (status, json.loads(body)["choices"][0]["text"]) == (200, "served by b2")
    # The backend saw the very body the client sent, and the session header.
    assert fleet["b2"].stats()["bodies"][-1] == {"model": "tiny", "prompt": "hi"}


def test_streaming_passes_sse_through(router: Router, fleet: dict[str, Backend]) -> None:
    key, _ = key_for(fleet, "b3")
    status, headers, body = request(router, "POST", "/v1/chat/completions", {**CHAT, "stream": True},
                                    {"x-session-id": key})
    assert (status, headers["content-type"], headers["transfer-encoding"]) == (200, "text/event-stream", "chunked")
    events = [e.removeprefix("data: ") for e in body.decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]) == "served by b3"


@pytest.mark.parametrize(("payload", "status", "code"), [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "missing_model"),
    (json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "model_not_found"),
    (json.dumps({"model": "tiny", "prompt": "x" * 70000}).encode(), 413, "request_too_large"),
    (json.dumps({"model": "tiny", "messages": "not a list"}).encode(), 400, "invalid_request"),
])
def test_bad_requests_get_openai_errors(router: Router, payload: bytes, status: int, code: str) -> None:
    got_status, _, body = request(router, "POST", "/v1/chat/completions", payload)
    err = json.loads(body)["error"]
    assert (got_status, err["code"], err["type"] in ("invalid_request_error", "not_found_error")) == (
        status, code, True)
    assert "127.0.0.1" not in body.decode()


def test_unknown_route_and_method(router: Router) -> None:
    assert request(router, "GET", "/v2/nothing")[0] == 404
    assert request(router, "GET", "/v1/completions")[0] == 405


def test_models_is_the_union_and_health_is_ok(router: Router) -> None:
    status, _, body = request(router, "GET", "/v1/models")
    assert (status, [m["id"] for m in json.loads(body)["data"]]) == (200, ["tiny"])
    status, _, body = request(router, "GET", "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok", "endpoints_available": 3})


def test_hung_backend_is_retried_once_on_the_next_endpoint(router: Router, fleet: dict[str, Backend]) -> None:
    key, order = key_for(fleet, "b1")
    fleet["b1"].control(mode="hang")
    retries = router.metric("kvmesh_router_retries_total")
    t0 = time.monotonic()
    status, _, body = request(router, "POST", "/v1/chat/completions", CHAT, {"x-session-id": key})
    elapsed = time.monotonic() - t0
    assert (status, json.loads(body)["system_fingerprint"]) == (200, order[1])
    assert 1.0 <= elapsed < 3.0  # one read timeout, then the retry
    assert router.metric("kvmesh_router_retries_total") == retries + 1


def test_all_backends_hung_gives_504_without_addresses(router: Router, fleet: dict[str, Backend]) -> None:
    for b in fleet.values():
        b.control(mode="hang")
    status, _, body = request(router, "POST", "/v1/completions", {"model": "tiny", "prompt": "x"})
    assert (status, json.loads(body)["error"]["code"]) == (504, "backend_timeout")
    assert "127.0.0.1" not in body.decode()


def test_backend_error_status_is_passed_through(router: Router, fleet: dict[str, Backend]) -> None:
    key, _ = key_for(fleet, "b2")
    fleet["b2"].control(mode="fail")
    status, _, body = request(router, "POST", "/v1/completions", {"model": "tiny", "prompt": "x"},
                              {"x-session-id": key})
    assert (status, json.loads(body)["error"]["message"]) == (500, "boom")


def test_failure_after_first_byte_ends_stream_with_error_event(router: Router, fleet: dict[str, Backend]) -> None:
    key, _ = key_for(fleet, "b3")
    fleet["b3"].control(mode="die_mid_stream")
    status, _, body = request(router, "POST", "/v1/completions",
                              {"model": "tiny", "prompt": "x", "stream": True}, {"x-session-id": key})
    events = [e.removeprefix("data: ") for e in body.decode().split("\n\n") if e]
    assert status == 200
    assert json.loads(events[0])["choices"][0]["text"] == "served"
    assert json.loads(events[1])["error"]["code"] == "upstream_error"
    assert events[2:] == ["[DONE]"]


def test_stream_events_are_forwarded_as_they_are_produced(router: Router, fleet: dict[str, Backend]) -> None:
    """No buffering and no Nagle delay: each event reaches the client when the backend sends it."""
    key, _ = key_for(fleet, "b2")
    fleet["b2"].control(mode="slow_stream", delay_s=0.4)
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=30)
    t0 = time.monotonic()
    conn.request("POST", "/v1/completions", body=json.dumps({"model": "tiny", "prompt": "x", "stream": True}),
                 headers={"Content-Type": "application/json", "x-session-id": key})
    resp = conn.getresponse()
    arrivals = []
    for line in resp:  # http.client de-chunks; lines arrive as the router forwards them
        if line.startswith(b"data: "):
            arrivals.append((time.monotonic() - t0, line.strip()))
    conn.close()
    assert [a[1] for a in arrivals][-1] == b"data: [DONE]"
    times = [a[0] for a in arrivals]
    assert len(times) == 4
    assert times[0] < 0.3  # the first event did not wait for the rest
    assert all(later - earlier >= 0.3 for earlier, later in zip(times[:3], times[1:3]))

def test_client_leaving_mid_stream_is_not_the_backends_fault(router: Router, fleet: dict[str, Backend]) -> None:
    key, _ = key_for(fleet, "b1")
    fleet["b1"].control(mode="slow_stream", delay_s=0.5)
    before = router.metric("kvmesh_router_requests_total", endpoint=fleet["b1"].url, strategy="session",
                           outcome="client_closed")
    conn = http.client.HTTPConnection("127.0.0.1", router.port, timeout=30)
    conn.request("POST", "/v1/completions", body=json.dumps({"model": "tiny", "prompt": "x", "stream": True}),
                 headers={"Content-Type": "application/json", "x-session-id": key})
    resp = conn.getresponse()
    assert resp.readline().startswith(b"data: ")
    conn.close()  # the client goes away after the first event
    wait_until(lambda: router.metric("kvmesh_router_requests_total", endpoint=fleet["b1"].url, strategy="session",
                                     outcome="client_closed") == before + 1, 10, "client_closed counted")
    assert router.metric("kvmesh_router_endpoint_healthy", endpoint=fleet["b1"].url) == 1.0


def test_pipelined_requests_are_answered_in_order(router: Router, fleet: dict[str, Backend]) -> None:
    import socket

    key1, _ = key_for(fleet, "b1")
    key3, _ = key_for(fleet, "b3")
    reqs = b""
    for key in (key1, key3):
        body = json.dumps({"model": "tiny", "prompt": "x"}).encode()
        reqs += (f"POST /v1/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
                 f"x-session-id: {key}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    reqs += b"GET /health HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        sock.sendall(reqs)  # three requests in one write
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.index(b'"system_fingerprint": "b1"') < data.index(b'"system_fingerprint": "b3"') < data.index(
        b'"endpoints_available"')

def test_panic_mode_when_every_breaker_is_open(router: Router, fleet: dict[str, Backend]) -> None:
    for b in fleet.values():
        b.control(healthy=False)  # /health fails, completions still work
    wait_until(lambda: request(router, "GET", "/health")[0] == 503, 10, "all endpoints marked down")
    status, _, body = request(router, "POST", "/v1/completions", {"model": "tiny", "prompt": "x"})
    assert (status, json.loads(body)["choices"][0]["text"].startswith("served by")) == (200, True)
    for b in fleet.values():
        b.control(healthy=True)
    wait_until(lambda: request(router, "GET", "/health")[0] == 200, 10, "endpoints re-admitted")

def test_killed_backend_fails_over_then_recovers(router: Router, fleet: dict[str, Backend]) -> None:
    key, order = key_for(fleet, "b1")
    b1 = fleet["b1"]
    b1.proc.kill()
    status, _, body = request(router, "POST", "/v1/completions", {"model": "tiny", "prompt": "x"},
                              {"x-session-id": key})
    assert (status, json.loads(body)["system_fingerprint"]) == (200, order[1])
    wait_until(lambda: router.metric("kvmesh_router_endpoint_healthy", endpoint=b1.url) == 0.0
               and request(router, "GET", "/health")[2] == b'{"status":"ok","endpoints_available":2}',
               10, "router marks the killed backend down")
    # While it is down its sessions go to the next endpoint without a retry.
    retries = router.metric("kvmesh_router_retries_total")
    _, _, body = request(router, "POST", "/v1/completions", {"model": "tiny", "prompt": "x"}, {"x-session-id": key})
    assert (json.loads(body)["system_fingerprint"], router.metric("kvmesh_router_retries_total")) == (
        order[1], retries)
    # Restart on the same port: active health checks re-admit it, and its sessions return.
    b1.proc = ManagedProcess(list(b1.proc.argv), "backend-b1").start()
    wait_until(lambda: http_ready(f"{b1.url}/health"), 30, "b1 restarted", alive=b1.proc.alive)
    wait_until(lambda: router.metric("kvmesh_router_endpoint_healthy", endpoint=b1.url) == 1.0,
               10, "router re-admits b1")
    _, _, body = request(router, "POST", "/v1/completions", {"model": "tiny", "prompt": "x"}, {"x-session-id": key})
    assert json.loads(body)["system_fingerprint"] == "b1"
    assert router.metric("kvmesh_router_requests_total", endpoint=b1.url, strategy="session",
                         outcome="connect_error") >= 1

