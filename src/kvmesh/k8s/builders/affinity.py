"""Node affinity from ``instanceType(s)`` and the raw ``nodeAffinity``.

``instanceTypes: [a, b, c]`` compiles to

    required:  node.kubernetes.io/instance-type In [a, b, c]
    preferred: weight 100 -> a, 67 -> b, 34 -> c

so pods only land on listed types and the scheduler fills the first type
before it falls back to the next one. A raw ``nodeAffinity`` is merged in:
its required terms are ORed by Kubernetes, so the instance-type expression is
ANDed into *each* of them (otherwise one raw term would bypass the list);
its preferred terms are appended unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

from kvmesh.k8s.builders.common import INSTANCE_TYPE_LABEL
from kvmesh.k8s.spec import Endpoint

MAX_WEIGHT = 100
"""Kubernetes caps preferred-term weights at 100."""


def preference_weights(count: int) -> list[int]:
    """Strictly descending weights in [1, 100] for ``count`` (<= 100) priorities."""
    if not 1 <= count <= MAX_WEIGHT:
        raise ValueError(f"count must be in [1, {MAX_WEIGHT}], got {count}")
    step = MAX_WEIGHT // count
    return [MAX_WEIGHT - i * step for i in range(count)]


def _instance_type_terms(types: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    required = {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": list(types)}
    preferred = [
        {"weight": weight, "preference": {"matchExpressions": [
            {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [itype]}]}}
        for itype, weight in zip(types, preference_weights(len(types)), strict=True)
    ]
    return required, preferred


def build_node_affinity(endpoint: Endpoint) -> dict[str, Any] | None:
    """The pod's ``nodeAffinity``, or None when the spec does not constrain nodes."""
    types = endpoint.spec.instance_type_priority
    raw = copy.deepcopy(endpoint.spec.node_affinity or {})
    if not types:
        return raw or None
    required_expr, preferred = _instance_type_terms(types)
    raw_required = raw.pop("requiredDuringSchedulingIgnoredDuringExecution", None) or {}
    raw_terms = raw_required.get("nodeSelectorTerms") or [{}]
    terms = [
        {**term, "matchExpressions": [*term.get("matchExpressions", []), required_expr]}
        for term in raw_terms
    ]
    if len(types) == 1:
        preferred = []  # a single type is fully expressed by the required term
    raw_preferred = raw.pop("preferredDuringSchedulingIgnoredDuringExecution", None) or []
    affinity: dict[str, Any] = {
        **raw,
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms},
    }
    if preferred or raw_preferred:
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferred + raw_preferred
    return affinity


def build_affinity(endpoint: Endpoint) -> dict[str, Any] | None:
    """The pod ``affinity`` block, or None."""
    node_affinity = build_node_affinity(endpoint)
    return {"nodeAffinity": node_affinity} if node_affinity else None
