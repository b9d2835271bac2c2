"""KubernetesClusterApi against a fake API server on loopback (discovery, SSA, list, delete)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from kvmesh.common.errors import BackendUnavailableError, TransportError
from kvmesh.k8s.api import FIELD_MANAGER, KubernetesClusterApi

GROUPS: dict[str, dict[str, tuple[str, str]]] = {
    # groupVersion -> plural -> (kind, singular)
    "v1": {"services": ("Service", "service"), "serviceaccounts": ("ServiceAccount", "x")},
    "apps/v1": {"deployments": ("Deployment", "deployment"), "daemonsets": ("DaemonSet", "d")},
}
_PATH = re.compile(r"^/(?:api|apis/[^/]+)/v1/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?$")


class FakeApiServer(BaseHTTPRequestHandler):
    """The handful of API server routes the dynamic client uses."""

    objects: dict[tuple[str, str, str], dict[str, Any]] = {}
    patches: list[tuple[str, str, dict[str, list[str]]]] = []

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _discovery(self, path: str) -> dict[str, Any] | None:
        if path == "/version":
            return {"major": "1", "minor": "30", "gitVersion": "v1.30.0"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            return {"kind": "APIGroupList", "groups": [{
                "name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]}
        group_version = path.removeprefix("/api/").removeprefix("/apis/")
        if group_version in GROUPS:
            return {"kind": "APIResourceList", "groupVersion": group_version, "resources": [
                {"name": plural, "singularName": singular, "namespaced": True, "kind": kind,
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                for plural, (kind, singular) in GROUPS[group_version].items()]}
        return None

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        url = urlsplit(self.path)
        doc = self._discovery(url.path)
        if doc is not None:
            return self._send(200, doc)
        match = _PATH.match(url.path)
        if match is None:
            return self._send(404, {"kind": "Status", "code": 404})
        ns, plural, name = match.groups()
        if name:
            obj = self.objects.get((plural, ns, name))
            return self._send(200, obj) if obj else self._send(404, {"kind": "Status", "code": 404})
        selector = parse_qs(url.query).get("labelSelector", [""])[0]
        wanted = dict(p.split("=", 1) for p in selector.split(",") if p)
        items = [o for (pl, n, _), o in sorted(self.objects.items()) if (pl, n) == (plural, ns)
                 and wanted.items() <= o["metadata"].get("labels", {}).items()]
        return self._send(200, {"kind": "List", "metadata": {}, "items": items})

    def do_PATCH(self) -> None:  # noqa: N802 (http.server naming)
        url = urlsplit(self.path)
        match = _PATH.match(url.path)
        if match is None:
            return self._send(404, {"kind": "Status", "code": 404})
        ns, plural, name = match.groups()
        body = yaml.safe_load(self.rfile.read(int(self.headers["Content-Length"])))
        self.patches.append((self.headers["Content-Type"], plural, parse_qs(url.query)))
        self.objects[(plural, ns, name)] = body
        return self._send(200, body)

    def do_DELETE(self) -> None:  # noqa: N802 (http.server naming)
        match = _PATH.match(urlsplit(self.path).path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if match is None:
            return self._send(404, {"kind": "Status", "code": 404})
        ns, plural, name = match.groups()
        if self.objects.pop((plural, ns, name), None) is None:
            return self._send(404, {"kind": "Status", "code": 404})
        return self._send(200, {"kind": "Status", "status": "Success"})


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubernetesClusterApi]:
    from kubernetes import client

    FakeApiServer.objects, FakeApiServer.patches = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield KubernetesClusterApi(client.ApiClient(config), str(tmp_path / "discovery.json"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def deployment(name: str, component: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ns",
                         "labels": {"app.kubernetes.io/instance": "ep",
                                    "app.kubernetes.io/component": component}},
            "spec": {"replicas": 1}}


def test_apply_is_server_side_apply_with_our_field_manager(api: KubernetesClusterApi) -> None:
    stored = api.apply(deployment("ep-worker", "worker"))
    assert stored == deployment("ep-worker", "worker")
    assert FakeApiServer.patches == [("application/apply-patch+yaml", "deployments",
                                      {"fieldManager": [FIELD_MANAGER], "force": ["true"]})]


def test_get_list_delete_round_trip(api: KubernetesClusterApi) -> None:
    api.apply(deployment("ep-worker", "worker"))
    api.apply(deployment("ep-router", "router"))
    assert api.get("apps/v1", "Deployment", "ns", "ep-worker") == deployment("ep-worker", "worker")
    assert api.get("apps/v1", "Deployment", "ns", "absent") is None
    listed = api.list("apps/v1", "Deployment", "ns", "app.kubernetes.io/component=router")
    assert [o["metadata"]["name"] for o in listed] == ["ep-router"]
    assert api.delete("apps/v1", "Deployment", "ns", "ep-router") is True
    assert api.delete("apps/v1", "Deployment", "ns", "ep-router") is False
    assert [o["metadata"]["name"] for o in api.list("apps/v1", "Deployment", "ns",
                                                    "app.kubernetes.io/instance=ep")] == [
        "ep-worker"]


def test_kinds_without_a_crd(api: KubernetesClusterApi) -> None:
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
              "metadata": {"name": "x", "namespace": "ns"}}
    with pytest.raises(BackendUnavailableError, match="ScaledObject .* is not installed"):
        api.apply(scaled)
    assert api.list("keda.sh/v1alpha1", "ScaledObject", "ns", "a=b") == []
    assert api.get("keda.sh/v1alpha1", "ScaledObject", "ns", "x") is None
    assert api.delete("keda.sh/v1alpha1", "ScaledObject", "ns", "x") is False


def test_unreachable_server_is_a_transport_error(tmp_path: Path) -> None:
    from kubernetes import client

    from kvmesh.common.procs import find_free_port

    config = client.Configuration(host=f"http://127.0.0.1:{find_free_port()}")
    config.retries = 0
    with pytest.raises(TransportError, match="Kubernetes API discovery failed"):
        KubernetesClusterApi(client.ApiClient(config), str(tmp_path / "d.json"))


def test_api_errors_are_transport_errors(api: KubernetesClusterApi) -> None:
    broken = deployment("ep-worker", "worker")
    broken["metadata"]["namespace"] = "bad/ns"  # the server answers 404 for this path
    with pytest.raises(TransportError, match="apply Deployment/ep-worker"):
        api.apply(broken)
