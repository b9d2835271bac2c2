"""Kubernetes discovery against a fake API server (aiohttp on loopback) speaking the watch protocol."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from kvmesh.router.config import BackendSpec, RouterConfig
from kvmesh.router.discovery.base import create_discovery
from kvmesh.router.discovery.k8s import KubernetesDiscovery
from kvmesh.router.endpoints import EndpointRegistry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def eslice(name: str, rv: str, endpoints: list[tuple[str, bool]], port: int = 8000,
           events: int | None = 5557) -> dict[str, Any]:
    ports = [{"name": "http", "port": port, "protocol": "TCP"}]
    if events:
        ports.append({"name": "kv-events", "port": events, "protocol": "TCP"})
    return {"metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": rv},
            "addressType": "IPv4", "ports": ports,
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in endpoints]}


def pod(name: str, ip: str, *, ready: bool = True, deleting: bool = False, events: str | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "resourceVersion": "1"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    if events:
        meta["annotations"] = {"kvmesh.io/kv-events-port": events}
    return {"metadata": meta, "status": {"phase": "Running", "podIP": ip, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}}


class FakeApi:
    """List returns ``items``; each watch streams what the test puts on ``events``."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.rv = "100"
        self.events: asyncio.Queue[dict | None] = asyncio.Queue()
        self.requests: list[dict[str, str]] = []
        self.gone_once = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.query))
        if request.query.get("watch") != "1":
            return web.json_response({"kind": "List", "metadata": {"resourceVersion": self.rv}, "items": self.items})
        if self.gone_once:
            self.gone_once = False
            return web.json_response({"kind": "Status", "code": 410}, status=410)
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            while (event := await self.events.get()) is not None:
                await resp.write(json.dumps(event).encode() + b"\n")
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the watcher went away (test teardown)
        return resp


@pytest.fixture
async def api():  # noqa: ANN201
    fake = FakeApi()
    app = web.Application()
    app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/llm/endpointslices", fake.handle)
    app.router.add_get("/api/v1/namespaces/llm/pods", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}"
    fake.events.put_nowait(None)
    await runner.cleanup()


async def until(predicate, what: str) -> None:  # noqa: ANN001
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(what)


def urls(reg: EndpointRegistry) -> list[tuple[str, str | None]]:
    return [(e.url, e.events_endpoint) for e in reg.all()]


async def start(api_url: str, resource: str) -> tuple[EndpointRegistry, KubernetesDiscovery, asyncio.Task]:
    cfg = RouterConfig(k8s_namespace="llm", k8s_selector="kubernetes.io/service-name=vllm",
                       k8s_api_url=api_url, k8s_resource=resource, k8s_port=8000)
    reg = EndpointRegistry()
    disc = create_discovery(cfg, reg)
    assert isinstance(disc, KubernetesDiscovery)
    await disc.start()
    return reg, disc, asyncio.create_task(disc.run())


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_endpointslices_list_watch_and_ghost_removal(api) -> None:  # noqa: ANN001
    fake, url = api
    fake.items = [eslice("s1", "90", [("10.0.0.1", True), ("10.0.0.2", True), ("10.0.0.3", False)])]
    reg, disc, task = await start(url, "endpointslices")
    try:
        assert urls(reg) == [("http://10.0.0.1:8000", "tcp://10.0.0.1:5557"),
                             ("http://10.0.0.2:8000", "tcp://10.0.0.2:5557")]
        # The pod behind 10.0.0.2 is evicted: its endpoint goes at once (no ghost).
        fake.events.put_nowait({"type": "MODIFIED", "object": eslice("s1", "101", [("10.0.0.1", True)])})
        await until(lambda: len(reg.all()) == 1, "endpoint removed")
        fake.events.put_nowait({"type": "ADDED", "object": eslice("s2", "102", [("10.0.1.9", True)], 9000, None)})
        await until(lambda: len(reg.all()) == 2, "slice added")
        assert urls(reg) == [("http://10.0.0.1:8000", "tcp://10.0.0.1:5557"), ("http://10.0.1.9:9000", None)]
        fake.events.put_nowait({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "150"}}})
        fake.events.put_nowait({"type": "DELETED", "object": eslice("s1", "151", [])})
        await until(lambda: len(reg.all()) == 1, "slice deleted")
        assert disc.resource_version == "151"
        watch = [q for q in fake.requests if q.get("watch") == "1"][0]
        assert watch == {"labelSelector": "kubernetes.io/service-name=vllm", "watch": "1",
                         "resourceVersion": "100", "allowWatchBookmarks": "true"}
    finally:
        await stop(task)


async def test_watch_gone_relists(api) -> None:  # noqa: ANN001
    fake, url = api
    fake.items = [eslice("s1", "90", [("10.0.0.1", True)])]
    reg, _, task = await start(url, "endpointslices")
    try:
        await until(lambda: len(fake.requests) == 2, "first watch open")
        fake.items = [eslice("s1", "200", [("10.0.0.7", True)])]
        fake.rv = "200"
        fake.gone_once = True
        fake.events.put_nowait(None)  # end the current watch; the next one answers 410
        await until(lambda: urls(reg) == [("http://10.0.0.7:8000", "tcp://10.0.0.7:5557")], "relisted")
        assert [q.get("watch") for q in fake.requests][:4] == [None, "1", "1", None]
    finally:
        await stop(task)


async def test_pods_ready_running_not_deleting(api) -> None:  # noqa: ANN001
    fake, url = api
    fake.items = [pod("p1", "10.1.0.1", events="5557"), pod("p2", "10.1.0.2", ready=False),
                  pod("p3", "10.1.0.3", deleting=True)]
    reg, _, task = await start(url, "pods")
    try:
        assert urls(reg) == [("http://10.1.0.1:8000", "tcp://10.1.0.1:5557")]
        fake.events.put_nowait({"type": "MODIFIED", "object": pod("p2", "10.1.0.2")})
        await until(lambda: len(reg.all()) == 2, "pod became ready")
        assert urls(reg)[1] == ("http://10.1.0.2:8000", None)
    finally:
        await stop(task)


def test_static_is_used_without_k8s_flags() -> None:
    from kvmesh.router.discovery.static import StaticDiscovery

    cfg = RouterConfig(backends=(BackendSpec("http://127.0.0.1:1"),))
    assert isinstance(create_discovery(cfg, EndpointRegistry()), StaticDiscovery)


async def test_router_follows_k8s_membership_end_to_end(api) -> None:  # noqa: ANN001
    """A RouterApp whose endpoints come from the fake API: scale-in removes a backend from routing."""
    import sys
    from pathlib import Path

    import aiohttp
    from prometheus_client import CollectorRegistry

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from router_backends import running_backends

    from kvmesh.router.app import RouterApp

    fake, url = api
    with running_backends(["b1", "b2"]) as fleet:
        b1, b2 = fleet["b1"], fleet["b2"]
        fake.items = [eslice("s1", "1", [("127.0.0.1", True)], b1.port, None),
                      eslice("s2", "2", [("127.0.0.1", True)], b2.port, None)]
        cfg = RouterConfig(k8s_namespace="llm", k8s_selector="app=vllm", k8s_api_url=url, port=0,
                           strategy="roundrobin", health_interval_s=0.2)
        app = RouterApp(cfg, CollectorRegistry())
        port = await app.start()
        try:
            async with aiohttp.ClientSession() as http:
                async def served_by() -> str:
                    body = {"model": "tiny", "prompt": "x"}
                    async with http.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as resp:
                        assert resp.status == 200
                        return (await resp.json())["system_fingerprint"]

                assert sorted([await served_by() for _ in range(4)]) == ["b1", "b1", "b2", "b2"]
                fake.events.put_nowait({"type": "DELETED", "object": fake.items[0]})
                await until(lambda: [e.url for e in app.endpoints.all()] == [b2.url], "b1 removed")
                assert [await served_by() for _ in range(3)] == ["b2", "b2", "b2"]
                async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                    assert await resp.json() == {"status": "ok", "endpoints_available": 1}
        finally:
            await app.stop()
