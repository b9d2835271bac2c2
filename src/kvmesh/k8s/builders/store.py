"""L2 ``tieredstorage``: a ``kvmesh store`` DaemonSet plus a headless Service.

One store per node. It keeps its memory tier in a file under the node's
shared-memory directory (a hostPath, default /dev/shm) that every worker pod
on the node also mounts, so a worker reads a leased entry straight from shared
memory. The store's TCP port is bound on the node (hostPort) and workers dial
``kvmesh://$(HOST_IP):PORT`` (status.hostIP through the downward API), which
always reaches the store on their own node. Its affinity is the workers', so
stores run only where workers can.

    node ──────────────────────────────────────────────────────────────
    │ worker pod ──TCP HOST_IP:9200──▶ store pod (hostPort 9200)       │
    │     └──── mmap /dev/shm/<segment> ◀──── writes ────┘            │
    ───────────────────────────────────────────────────────────────────

With ``redis`` there is nothing to deploy: workers get the URL as given.
"""

from __future__ import annotations

from typing import Any

from kvmesh.k8s.builders.affinity import build_affinity
from kvmesh.k8s.builders.common import (
    STORE,
    Manifest,
    RenderOptions,
    child_name,
    metadata,
    selector_labels,
)
from kvmesh.k8s.builders.worker import SHM_VOLUME, shm_volume, uses_tiered_storage
from kvmesh.k8s.spec import Endpoint, TieredStorageSpec


def _settings(endpoint: Endpoint) -> TieredStorageSpec:
    l2 = endpoint.spec.kv_cache_spec.l2_cache_spec
    assert l2 is not None  # only called for tieredstorage
    return l2.tiered_storage


def store_args(endpoint: Endpoint) -> list[str]:
    """The ``kvmesh store`` arguments (after the command itself)."""
    settings = _settings(endpoint)
    return [
        "--host", "0.0.0.0",
        "--port", str(settings.port),
        "--memory-size", settings.memory_size,
        "--metrics-port", str(settings.metrics_port),
    ]


def _pod_spec(endpoint: Endpoint, options: RenderOptions) -> dict[str, Any]:
    settings = _settings(endpoint)
    container = {
        "name": STORE,
        "image": options.kvmesh_image,
        "imagePullPolicy": options.image_pull_policy,
        "command": ["kvmesh", "store"],
        "args": store_args(endpoint),
        "ports": [
            {"name": STORE, "containerPort": settings.port, "hostPort": settings.port,
             "protocol": "TCP"},
            {"name": "metrics", "containerPort": settings.metrics_port, "protocol": "TCP"},
        ],
        "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
        "readinessProbe": {"tcpSocket": {"port": STORE}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": STORE}, "periodSeconds": 10,
                          "failureThreshold": 6},
    }
    pod: dict[str, Any] = {"containers": [container], "volumes": [shm_volume(endpoint)]}
    affinity = build_affinity(endpoint)
    if affinity:
        pod["affinity"] = affinity
    return pod


def build_store_daemonset(endpoint: Endpoint, options: RenderOptions) -> Manifest:
    """The node-local store DaemonSet."""
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": metadata(endpoint, child_name(endpoint, STORE), STORE),
        "spec": {
            "selector": {"matchLabels": selector_labels(endpoint, STORE)},
            "template": {
                "metadata": {"labels": selector_labels(endpoint, STORE)},
                "spec": _pod_spec(endpoint, options),
            },
        },
    }


def build_store_service(endpoint: Endpoint, options: RenderOptions) -> Manifest:
    """Headless Service: DNS names for every store pod, and a scrape target."""
    settings = _settings(endpoint)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(endpoint, child_name(endpoint, STORE), STORE),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(endpoint, STORE),
            "ports": [
                {"name": STORE, "port": settings.port, "targetPort": STORE, "protocol": "TCP"},
                {"name": "metrics", "port": settings.metrics_port, "targetPort": "metrics",
                 "protocol": "TCP"},
            ],
        },
    }


def build_store(endpoint: Endpoint, options: RenderOptions) -> list[Manifest]:
    """Store children for tieredstorage, none otherwise."""
    if not uses_tiered_storage(endpoint):
        return []
    return [build_store_daemonset(endpoint, options), build_store_service(endpoint, options)]
