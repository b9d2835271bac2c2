"""Shared helpers of the k8s tests: an in-memory Kubernetes API, the samples, spec builders.

A uniquely named module (not ``conftest``) so that test modules can import it
without depending on which ``conftest`` module pytest loaded last.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kvmesh.common.errors import BackendUnavailableError
from kvmesh.k8s.api import ClusterApi

REPO = Path(__file__).resolve().parents[3]
SAMPLES_DIR = REPO / "deploy" / "samples"
SAMPLES = sorted(SAMPLES_DIR.glob("*.yaml"))

CORE_KINDS = {
    ("v1", "ServiceAccount"), ("v1", "Service"), ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"), ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
}
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}


class FakeClusterApi(ClusterApi):
    """An API server in a dict: kinds can be 'not installed', events are recorded.

    ``apply`` replaces everything but ``status`` (what server-side apply does
    for fields owned by a single manager), as the real server would.
    """

    def __init__(self, installed: set[tuple[str, str]] | None = None) -> None:
        self.installed = set(CORE_KINDS | CRD_KINDS) if installed is None else installed
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.applied: list[tuple[str, str]] = []

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        key = (manifest["apiVersion"], manifest["kind"], manifest["metadata"]["namespace"],
               manifest["metadata"]["name"])
        if key[:2] not in self.installed:
            raise BackendUnavailableError(f"{key[1]} ({key[0]}) is not installed in the cluster")
        stored = copy.deepcopy(dict(manifest))
        if "status" in self.objects.get(key, {}):
            stored["status"] = self.objects[key]["status"]
        self.objects[key] = stored
        self.applied.append((key[1], key[3]))
        return copy.deepcopy(stored)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, api_version: str, kind: str, namespace: str,
             label_selector: str) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in label_selector.split(","))
        return [copy.deepcopy(obj) for (av, k, ns, _), obj in sorted(self.objects.items())
                if (av, k, ns) == (api_version, kind, namespace)
                and wanted.items() <= obj["metadata"].get("labels", {}).items()]

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        return self.objects.pop((api_version, kind, namespace, name), None) is not None

    def event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def set_ready(self, namespace: str, name: str, ready: int) -> None:
        """What the Deployment controller would write."""
        self.objects[("apps/v1", "Deployment", namespace, name)]["status"] = {
            "readyReplicas": ready}

    def names(self) -> list[tuple[str, str]]:
        """(kind, name) of every stored object, sorted."""
        return sorted((k, n) for (_, k, _, n) in self.objects)


def load_sample(name: str) -> dict[str, Any]:
    """One sample resource by file stem."""
    return yaml.safe_load((SAMPLES_DIR / f"{name}.yaml").read_text())  # type: ignore[no-any-return]


MINIMAL: dict[str, Any] = {
    "modelName": "m",
    "modelSourceConfig": {"modelSourceType": "pvc", "pvcStorage": {"claimName": "models"}},
    "worker": {"image": "img:1"},
}
"""The smallest valid spec; tests derive others from it with :func:`with_`."""


def with_(patch: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Deep-merge ``patch`` into a copy of ``base`` (MINIMAL by default)."""
    out = copy.deepcopy(base if base is not None else MINIMAL)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = with_(value, out[key])
        else:
            out[key] = value
    return out
