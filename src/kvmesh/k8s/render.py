"""Render every child manifest of an ``InferenceEndpointConfig``.

``kvmesh operator render`` and the operator's reconcile loop both call
:func:`render_endpoint`, so what GitOps reviews is exactly what the operator
applies. The order of :data:`BUILDERS` is the apply order: identities and
RBAC before the pods that use them, the store before the workers that dial
it, the Deployment before the ScaledObject that targets it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml

from kvmesh.k8s.builders.autoscaling import build_scaled_object
from kvmesh.k8s.builders.common import ROUTER, WORKER, Manifest, RenderOptions, child_name
from kvmesh.k8s.builders.monitoring import build_monitor
from kvmesh.k8s.builders.router import build_router
from kvmesh.k8s.builders.store import build_store
from kvmesh.k8s.builders.worker import build_worker
from kvmesh.k8s.spec import Endpoint, parse_endpoint

Builder = Callable[[Endpoint, RenderOptions], list[Manifest]]

BUILDERS: dict[str, Builder] = {
    "router": build_router,
    "store": build_store,
    "worker": build_worker,
    "autoscaling": build_scaled_object,
    "monitoring": build_monitor,
}
"""Child group -> builder, in apply order. A builder returns [] when its group is off."""

MANAGED_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"),
    ("v1", "Service"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
)
"""Every (apiVersion, kind) a builder can emit: what the operator lists when pruning."""


def render_endpoint(endpoint: Endpoint, options: RenderOptions) -> list[Manifest]:
    """All children of ``endpoint`` in apply order."""
    manifests: list[Manifest] = []
    for build in BUILDERS.values():
        manifests.extend(build(endpoint, options))
    # Builders share small dicts (labels, rules); callers get independent trees.
    return copy.deepcopy(manifests)


def endpoint_url(endpoint: Endpoint, options: RenderOptions) -> str:
    """In-cluster URL of the invocation endpoint: the router's when routing is on."""
    if endpoint.spec.intelligent_routing_spec.enabled:
        host, port = child_name(endpoint, ROUTER), options.router_port
    else:
        host = child_name(endpoint, WORKER)
        port = endpoint.spec.worker.model_invocation_port.container_port
    fqdn = f"{host}.{endpoint.namespace}.svc.{options.cluster_domain}"
    return f"http://{fqdn}:{port}/{endpoint.spec.invocation_endpoint.lstrip('/')}"


def render_documents(bodies: Iterable[Mapping[str, Any]], options: RenderOptions,
                     namespace: str | None = None) -> list[Manifest]:
    """Render several resources (one YAML stream); ``namespace`` fills in a missing one."""
    out: list[Manifest] = []
    for body in bodies:
        if namespace and not (body.get("metadata") or {}).get("namespace"):
            body = {**body, "metadata": {**(body.get("metadata") or {}), "namespace": namespace}}
        out.extend(render_endpoint(parse_endpoint(body), options))
    return out


class _NoAliasDumper(yaml.SafeDumper):
    """Never writes ``&id001`` anchors: manifests are read by people and GitOps diffs."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(manifests: Iterable[Manifest]) -> str:
    """Multi-document YAML, keys in builder order (stable for diffs)."""
    return yaml.dump_all(list(manifests), Dumper=_NoAliasDumper, sort_keys=False, width=100)
