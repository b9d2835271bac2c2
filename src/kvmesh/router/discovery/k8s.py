"""Kubernetes discovery: list, then watch, EndpointSlices (preferred) or Pods by label selector.

Talks to the API server's REST watch protocol directly with aiohttp (no
kubernetes client on the hot path, nothing to import at router start)::

    GET {api}/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=SEL
        -> {"metadata": {"resourceVersion": RV}, "items": [...]}
    GET ...same path...?labelSelector=SEL&watch=1&resourceVersion=RV&allowWatchBookmarks=true
        -> one JSON object per line: {"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": {...}}

Pods use ``/api/v1/namespaces/{ns}/pods`` the same way.

What becomes an endpoint:
- EndpointSlice: every address of every endpoint whose ``conditions.ready``
  is not false, on the slice's port named ``http`` (else its first port, else
  ``--k8s-port``). A port named ``kv-events`` gives the KV event endpoint
  ``tcp://ADDRESS:PORT``. Note that slices carry the *Service's* labels, so the
  selector is usually ``kubernetes.io/service-name=NAME``.
- Pod: phase Running, condition Ready true, not being deleted; ``--k8s-port``;
  the annotation ``kvmesh.io/kv-events-port`` gives the KV event endpoint.

A watch that ends is resumed from the last resourceVersion; a 410 Gone (or
ERROR event) relists from scratch. Failures back off up to 5 s and never
raise: the last known membership stays in force meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from kvmesh.router.config import BackendSpec
from kvmesh.router.discovery.base import Discovery

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EVENTS_ANNOTATION = "kvmesh.io/kv-events-port"
EVENTS_PORT_NAME = "kv-events"


class ResourceGone(Exception):
    """The watch's resourceVersion is too old: relist."""


def slice_backends(obj: dict[str, Any], default_port: int) -> list[BackendSpec]:
    """Backends of one EndpointSlice."""
    ports = obj.get("ports") or []
    http = next((p for p in ports if p.get("name") == "http"), None) or next(
        (p for p in ports if p.get("name") != EVENTS_PORT_NAME), None)
    port = int(http["port"]) if http and http.get("port") else default_port
    events = next((int(p["port"]) for p in ports if p.get("name") == EVENTS_PORT_NAME and p.get("port")), None)
    out = []
    for ep in obj.get("endpoints") or []:
        if (ep.get("conditions") or {}).get("ready") is False:
            continue
        for addr in ep.get("addresses") or []:
            out.append(BackendSpec(f"http://{addr}:{port}", f"tcp://{addr}:{events}" if events else None))
    return out


def pod_backends(obj: dict[str, Any], default_port: int) -> list[BackendSpec]:
    """The backend of one Pod, if it is ready to serve."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    ip = status.get("podIP")
    if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not ready or not ip:
        return []
    events = (meta.get("annotations") or {}).get(EVENTS_ANNOTATION)
    return [BackendSpec(f"http://{ip}:{default_port}", f"tcp://{ip}:{int(events)}" if events else None)]


_RESOURCES = {
    "endpointslices": ("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", slice_backends),
    "pods": ("/api/v1/namespaces/{ns}/pods", pod_backends),
}


class KubernetesDiscovery(Discovery):
    """Follows EndpointSlices or Pods matching a label selector in one namespace."""

    def _setup(self) -> None:
        cfg = self.config
        self.path, self.extract = _RESOURCES[cfg.k8s_resource]
        self.path = self.path.format(ns=cfg.k8s_namespace)
        self.headers: dict[str, str] = {}
        self.ssl: ssl.SSLContext | bool = False
        if cfg.k8s_api_url:
            self.api = cfg.k8s_api_url.rstrip("/")
        else:  # in-cluster service account
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
            if not host or not port:
                raise ValueError("not in a cluster: give --k8s-api-url")
            self.api = f"https://{host}:{port}"
            self.headers["Authorization"] = f"Bearer {(SA_DIR / 'token').read_text().strip()}"
            self.ssl = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
        self.objects: dict[str, list[BackendSpec]] = {}
        self.resource_version = ""
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._setup()
        # Connect and list deadlines; the watch itself may stay open for long.
        self.session = aiohttp.ClientSession(headers=self.headers, timeout=aiohttp.ClientTimeout(
            total=None, connect=5.0, sock_read=330.0))
        try:
            await self.relist()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            log.error("initial Kubernetes list failed (%s); will retry", exc)

    def _publish(self) -> None:
        specs = {s.url: s for items in self.objects.values() for s in items}
        self.registry.set_backends(specs.values())

    async def relist(self) -> None:
        assert self.session is not None
        params = {"labelSelector": self.config.k8s_selector or ""}
        async with self.session.get(self.api + self.path, params=params, ssl=self.ssl) as resp:
            if resp.status != 200:
                raise ValueError(f"list {self.path} answered {resp.status}")
            body = await resp.json()
        self.objects = {_key(o): self.extract(o, self.config.k8s_port) for o in body.get("items") or []}
        self.resource_version = (body.get("metadata") or {}).get("resourceVersion", "")
        self._publish()

    async def watch_once(self) -> None:
        """One watch request, applying events until the server ends it."""
        assert self.session is not None
        params = {"labelSelector": self.config.k8s_selector or "", "watch": "1",
                  "resourceVersion": self.resource_version, "allowWatchBookmarks": "true"}
        async with self.session.get(self.api + self.path, params=params, ssl=self.ssl) as resp:
            if resp.status == 410:
                raise ResourceGone()
            if resp.status != 200:
                raise ValueError(f"watch {self.path} answered {resp.status}")
            async for line in resp.content:
                if line.strip():
                    self.apply(json.loads(line))

    def apply(self, event: dict[str, Any]) -> None:
        """Apply one watch event."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise ResourceGone() if obj.get("code") == 410 else ValueError(f"watch error: {obj}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = rv
        if kind == "BOOKMARK":
            return
        if kind == "DELETED":
            self.objects.pop(_key(obj), None)
        else:
            self.objects[_key(obj)] = self.extract(obj, self.config.k8s_port)
        self._publish()

    async def run(self) -> None:
        delay = 0.1
        try:
            while True:
                try:
                    if not self.resource_version:
                        await self.relist()
                    await self.watch_once()
                    delay = 0.1
                except ResourceGone:
                    self.resource_version = ""
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                    log.warning("Kubernetes watch failed (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)  # back-off between retries, not a readiness wait
                    delay = min(delay * 2, 5.0)
        finally:
            if self.session is not None:
                await self.session.close()


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name"))
