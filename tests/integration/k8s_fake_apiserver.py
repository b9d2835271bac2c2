"""A small Kubernetes API server on loopback, enough for kopf and the operator's client.

It serves API discovery for the kinds the operator touches, namespaced
list / watch / get / server-side apply / merge patch (including the
``/status`` subresource) / delete, and event creation. Objects live in a
dict; every change bumps a global resourceVersion and is appended to a log
that watch requests stream from, one JSON event per line, as the real API
server does. Nothing is validated: the unit tests validate manifests.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

# groupVersion -> plural -> kind (all namespaced).
RESOURCES: dict[str, dict[str, str]] = {
    "v1": {"services": "Service", "serviceaccounts": "ServiceAccount", "events": "Event",
           "pods": "Pod"},
    "apps/v1": {"deployments": "Deployment", "daemonsets": "DaemonSet"},
    "rbac.authorization.k8s.io/v1": {"roles": "Role", "rolebindings": "RoleBinding"},
    "inference.kvmesh.dev/v1alpha1": {"inferenceendpointconfigs": "InferenceEndpointConfig"},
}
CLUSTER_RESOURCES: dict[str, dict[str, str]] = {
    # Cluster-scoped kinds kopf lists and watches at startup.
    "v1": {"namespaces": "Namespace"},
    "apiextensions.k8s.io/v1": {"customresourcedefinitions": "CustomResourceDefinition"},
}
_CLUSTER_PATH = re.compile(r"^/(?:api/(?P<core>v1)|apis/(?P<gv>[^/]+/[^/]+))/(?P<plural>[^/]+)$")
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<gv>[^/]+/[^/]+))"
    r"/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$")


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _json_patch(target: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 JSON patch: the add / replace / remove / test operations kopf sends."""
    for op in ops:
        *parents, leaf = [p.replace("~1", "/").replace("~0", "~")
                          for p in op["path"].lstrip("/").split("/")]
        node: Any = target
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if op["op"] == "test":
            current = node[int(leaf)] if isinstance(node, list) else node.get(leaf)
            if current != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif op["op"] == "remove":
            del node[int(leaf) if isinstance(node, list) else leaf]
        elif isinstance(node, list):
            index = len(node) if leaf == "-" else int(leaf)
            if op["op"] == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            else:
                node[index] = copy.deepcopy(op["value"])
        else:
            node[leaf] = copy.deepcopy(op["value"])
    return target


class ClusterState:
    """Objects, a change log for watches, and recorded events."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.rv = 100
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.log: list[tuple[int, str, str, str, dict[str, Any]]] = []

    def _record(self, kind: str, key: tuple[str, str, str, str], obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.log.append((self.rv, kind, key[0], key[1], copy.deepcopy(obj)))
        self.lock.notify_all()

    def put(self, gv: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace (keeping status and identity), as apply does."""
        with self.lock:
            meta = obj["metadata"]
            key = (gv, plural, meta["namespace"], meta["name"])
            old = self.objects.get(key)
            new = copy.deepcopy(obj)
            new.setdefault("apiVersion", gv)
            new.setdefault("kind", RESOURCES[gv][plural])
            if old is None:
                new["metadata"].update(uid=str(uuid.uuid4()), generation=1,
                                       creationTimestamp="2026-01-01T00:00:00Z")
            else:
                for field in ("uid", "generation", "creationTimestamp", "annotations",
                              "finalizers"):
                    if field in old["metadata"] and field not in new["metadata"]:
                        new["metadata"][field] = old["metadata"][field]
                if "status" in old:
                    new["status"] = old["status"]
                if old.get("spec") != new.get("spec"):
                    new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            self.objects[key] = new
            self._record("ADDED" if old is None else "MODIFIED", key, new)
            return copy.deepcopy(new)

    def patch(self, key: tuple[str, str, str, str], patch: dict[str, Any] | list[Any],
              status_only: bool) -> dict[str, Any] | None:
        """A JSON merge patch (dict) or JSON patch (list); None if the object is absent."""
        with self.lock:
            obj = self.objects.get(key)
            if obj is None:
                return None
            old_spec = copy.deepcopy(obj.get("spec"))
            if isinstance(patch, list):
                _json_patch(obj, patch)
            else:
                if status_only:
                    patch = {"status": patch.get("status", {})}
                elif "status" in patch and key[1] == "inferenceendpointconfigs":
                    patch = {k: v for k, v in patch.items() if k != "status"}  # subresource
                _merge(obj, patch)
            if obj.get("spec") != old_spec:
                obj["metadata"]["generation"] += 1
            self._record("MODIFIED", key, obj)
            return copy.deepcopy(obj)

    def delete(self, key: tuple[str, str, str, str]) -> bool:
        with self.lock:
            obj = self.objects.pop(key, None)
            if obj is not None:
                self._record("DELETED", key, obj)
            return obj is not None

    def find(self, gv: str, plural: str, ns: str | None = None) -> list[dict[str, Any]]:
        """Current objects of a kind, sorted by name."""
        with self.lock:
            return [copy.deepcopy(o) for (g, p, n, _), o in sorted(self.objects.items())
                    if (g, p) == (gv, plural) and ns in (None, n)]


def _discovery(path: str) -> dict[str, Any] | None:
    if path == "/version":
        return {"major": "1", "minor": "30", "gitVersion": "v1.30.0"}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"]}
    if path == "/apis":
        groups = [{"name": gv.split("/")[0],
                   "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                   "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
                  for gv in sorted(set(RESOURCES) | set(CLUSTER_RESOURCES)) if "/" in gv]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    gv = path.removeprefix("/api/").removeprefix("/apis/")
    if gv not in RESOURCES and gv not in CLUSTER_RESOURCES:
        return None
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
    resources = [{"name": plural, "singularName": kind.lower(), "namespaced": namespaced,
                  "kind": kind, "verbs": verbs}
                 for table, namespaced in ((RESOURCES, True), (CLUSTER_RESOURCES, False))
                 for plural, kind in table.get(gv, {}).items()]
    if gv == "inference.kvmesh.dev/v1alpha1":
        resources.append({"name": "inferenceendpointconfigs/status", "singularName": "",
                          "namespaced": True, "kind": "InferenceEndpointConfig",
                          "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": resources}


def _handler(state: ClusterState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection; watches end on close

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self) -> None:
            self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "reason": "NotFound", "code": 404})

        def _route(self) -> tuple[tuple[str, str, str, str | None], str | None, dict] | None:
            url = urlsplit(self.path)
            match = _PATH.match(url.path)
            if match is None:
                return None
            gv = match["core"] or match["gv"]
            if gv not in RESOURCES or match["plural"] not in RESOURCES[gv]:
                return None
            key = (gv, match["plural"], match["ns"], match["name"])
            return key, match["sub"], parse_qs(url.query)

        def _body(self) -> Any:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return yaml.safe_load(raw) if raw else None

        def _cluster_scoped(self) -> bool:
            """Namespaces (just "default") and CRDs (none): listed once, watches stay quiet."""
            url = urlsplit(self.path)
            match = _CLUSTER_PATH.match(url.path)
            gv = match and (match["core"] or match["gv"])
            if not match or match["plural"] not in CLUSTER_RESOURCES.get(gv or "", {}):
                return False
            if parse_qs(url.query).get("watch", ["false"])[0] in ("true", "1"):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                with state.lock:
                    state.lock.wait(timeout=2.0)
                return True
            items = [{"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": "default", "resourceVersion": "1"}}]
            self._send(200, {"kind": "List", "apiVersion": gv,
                             "metadata": {"resourceVersion": "1"},
                             "items": items if match["plural"] == "namespaces" else []})
            return True

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            doc = _discovery(urlsplit(self.path).path)
            if doc is not None:
                return self._send(200, doc)
            if self._cluster_scoped():
                return None
            route = self._route()
            if route is None:
                return self._not_found()
            (gv, plural, ns, name), _, query = route
            if name:
                obj = state.objects.get((gv, plural, ns, name))
                return self._send(200, obj) if obj else self._not_found()
            if query.get("watch", ["false"])[0] in ("true", "1"):
                return self._watch(gv, plural, ns, query)
            selector = dict(p.split("=", 1) for p in query.get("labelSelector", [""])[0].split(",")
                            if p)
            items = [o for o in state.find(gv, plural, ns)
                     if selector.items() <= o["metadata"].get("labels", {}).items()]
            return self._send(200, {"kind": RESOURCES[gv][plural] + "List", "apiVersion": gv,
                                    "metadata": {"resourceVersion": str(state.rv)},
                                    "items": items})

        def _watch(self, gv: str, plural: str, ns: str, query: dict[str, list[str]]) -> None:
            since = int(query.get("resourceVersion", ["0"])[0] or 0)
            timeout = min(float(query.get("timeoutSeconds", ["2"])[0]), 2.0)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            with state.lock:
                state.lock.wait_for(lambda: any(
                    rv > since and (g, p) == (gv, plural) for rv, _, g, p, _ in state.log),
                    timeout=timeout)
                events = [(kind, obj) for rv, kind, g, p, obj in state.log
                          if rv > since and (g, p) == (gv, plural)
                          and obj["metadata"]["namespace"] == ns]
            for kind, obj in events:
                self.wfile.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
            self.wfile.flush()

        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            route = self._route()
            if route is None:
                return self._not_found()
            (gv, plural, ns, _), _, _ = route
            body = self._body()
            body.setdefault("metadata", {})["namespace"] = ns
            if not body["metadata"].get("name"):
                body["metadata"]["name"] = body["metadata"].get("generateName", "x") + str(
                    state.rv)
            return self._send(201, state.put(gv, plural, body))

        def do_PATCH(self) -> None:  # noqa: N802 (http.server naming)
            route = self._route()
            if route is None:
                return self._not_found()
            (gv, plural, ns, name), sub, _ = route
            body = self._body()
            if self.headers["Content-Type"].startswith("application/apply-patch"):
                return self._send(200, state.put(gv, plural, body))
            result = state.patch((gv, plural, ns, name or ""), body, status_only=sub == "status")
            return self._send(200, result) if result else self._not_found()

        def do_DELETE(self) -> None:  # noqa: N802 (http.server naming)
            route = self._route()
            self._body()
            if route is None:
                return self._not_found()
            (gv, plural, ns, name), _, _ = route
            if not state.delete((gv, plural, ns, name or "")):
                return self._not_found()
            return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    return Handler


@contextmanager
def fake_apiserver() -> Iterator[tuple[str, ClusterState]]:
    """(base URL, state) of a fake API server running for the duration of the block."""
    state = ClusterState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
