"""RBAC: the router's namespaced discovery role, and the operator's own ClusterRole.

The router watches the workers' EndpointSlices (or pods) through the API, so
it runs under its own ServiceAccount with a Role limited to reading those,
in its namespace only.

``OPERATOR_RULES`` is the least privilege the operator needs; the Helm
chart's ``clusterrole.yaml`` must list exactly these rules (a test compares
them). Kubernetes forbids granting permissions one does not hold, so the
operator also holds the router's read rules in order to create its Role.
"""

from __future__ import annotations

from typing import Any

from kvmesh.k8s.builders.common import ROUTER, Manifest, RenderOptions, child_name, metadata
from kvmesh.k8s.spec import GROUP, PLURAL, Endpoint

READ = ["get", "list", "watch"]
MANAGE = ["get", "list", "watch", "create", "update", "patch", "delete"]

ROUTER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods", "endpoints"], "verbs": READ},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
]
"""What the router needs to discover workers."""

OPERATOR_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets"], "verbs": MANAGE},
    {"apiGroups": [""], "resources": ["services", "serviceaccounts"], "verbs": MANAGE},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
     "verbs": MANAGE},
    {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": MANAGE},
    {"apiGroups": ["monitoring.coreos.com"], "resources": ["podmonitors", "servicemonitors"],
     "verbs": MANAGE},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    # kopf discovers the CRD and, when cluster-wide, watches namespaces.
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    *ROUTER_RULES,
]
"""Least privilege of the operator's ServiceAccount (mirrored in the Helm chart)."""


def build_router_rbac(endpoint: Endpoint, options: RenderOptions) -> list[Manifest]:
    """ServiceAccount, Role and RoleBinding of the router."""
    name = child_name(endpoint, ROUTER)
    meta = metadata(endpoint, name, ROUTER)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": ROUTER_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": endpoint.namespace}]},
    ]
