"""Names, labels, metadata and options shared by every manifest builder.

Every builder is a pure function ``(Endpoint, RenderOptions) -> list[dict]``:
no I/O, no clock, no randomness, so rendering the same resource twice gives
byte-identical YAML (GitOps diffs stay quiet) and tests can assert exact
structures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvmesh import __version__
from kvmesh.k8s.spec import API_VERSION, KIND, Endpoint

Manifest = dict[str, Any]

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kvmesh-operator"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"

WORKER = "worker"
ROUTER = "router"
STORE = "store"


@dataclass(frozen=True)
class RenderOptions:
    """Operator-wide settings that are not part of any one resource."""

    kvmesh_image: str = f"kvmesh/kvmesh:{__version__}"
    """Image with kvmesh installed, used by the router and the store."""
    image_pull_policy: str = "IfNotPresent"
    """Pull policy of every container the operator creates."""
    kv_events_port: int = 5557
    """Port on which workers publish KV events (``--kv-events-port``) for ``kvaware``."""
    router_port: int = 8000
    """Port the router pods listen on."""
    cluster_domain: str = "cluster.local"
    """DNS suffix used in the endpoint URL."""

    def __post_init__(self) -> None:
        if not self.kvmesh_image:
            raise ValueError("kvmesh_image must be non-empty")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(f"image_pull_policy must be Always|IfNotPresent|Never, "
                             f"got {self.image_pull_policy!r}")
        for name in ("kv_events_port", "router_port"):
            if not 1 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} must be in [1, 65535], got {getattr(self, name)}")
        if not self.cluster_domain:
            raise ValueError("cluster_domain must be non-empty")


def child_name(endpoint: Endpoint, component: str) -> str:
    """``<endpoint>-<component>``: the name of a child object."""
    return f"{endpoint.name}-{component}"


def selector_labels(endpoint: Endpoint, component: str | None = None) -> dict[str, str]:
    """Labels that select one component's pods (or all of an endpoint's pods)."""
    labels = {LABEL_NAME: "kvmesh", LABEL_INSTANCE: endpoint.name}
    if component is not None:
        labels[LABEL_COMPONENT] = component
    return labels


def labels(endpoint: Endpoint, component: str) -> dict[str, str]:
    """Every label of a child object; ``managed-by`` lets the operator find and prune them."""
    return {**selector_labels(endpoint, component), LABEL_MANAGED_BY: MANAGED_BY}


def label_selector_string(selector: dict[str, str]) -> str:
    """``k1=v1,k2=v2`` in a stable order, for flags and list calls."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items()))


def owner_reference(endpoint: Endpoint) -> dict[str, Any]:
    """Makes the child garbage-collected with the resource; ``controller`` marks us as its owner."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": endpoint.name,
        "uid": endpoint.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(endpoint: Endpoint, name: str, component: str) -> dict[str, Any]:
    """Metadata of a child. A resource read from a file has no uid yet, so no owner."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": endpoint.namespace,
        "labels": labels(endpoint, component),
    }
    if endpoint.uid:
        meta["ownerReferences"] = [owner_reference(endpoint)]
    return meta


def http_probe(path: str, port: str, period_s: int, failures: int) -> dict[str, Any]:
    """An HTTP GET probe on a named container port."""
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period_s,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }
