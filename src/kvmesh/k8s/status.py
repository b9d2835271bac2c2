"""Status of an ``InferenceEndpointConfig``: conditions, replicas and the URL.

Conditions follow the Kubernetes convention (one entry per ``type``,
``lastTransitionTime`` changes only when ``status`` flips):

- ``SpecValid``: the spec parsed (False names every bad field);
- ``Progressing``: children were applied and workers are still rolling out;
- ``Ready``: at least one worker (and the router, if enabled) passes readiness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvmesh.k8s.api import ClusterApi
from kvmesh.k8s.builders.common import ROUTER, WORKER, RenderOptions, child_name
from kvmesh.k8s.render import endpoint_url
from kvmesh.k8s.spec import Endpoint


@dataclass(frozen=True)
class Condition:
    """One status condition, before it gets its timestamps."""

    type: str
    """``SpecValid``, ``Progressing`` or ``Ready``."""
    status: str
    """``True``, ``False`` or ``Unknown``."""
    reason: str
    """CamelCase reason."""
    message: str = ""
    """Human-readable detail."""


def set_condition(conditions: Sequence[Mapping[str, Any]], new: Condition, now: str,
                  generation: int | None) -> list[dict[str, Any]]:
    """``conditions`` with ``new`` merged in; keeps the transition time if status is unchanged."""
    out: list[dict[str, Any]] = []
    previous = None
    for cond in conditions:
        if cond.get("type") == new.type:
            previous = cond
        else:
            out.append(dict(cond))
    changed = previous is None or previous.get("status") != new.status
    entry: dict[str, Any] = {
        "type": new.type, "status": new.status, "reason": new.reason, "message": new.message,
        "lastTransitionTime": now if changed else previous.get("lastTransitionTime", now),
    }
    if generation is not None:
        entry["observedGeneration"] = generation
    out.append(entry)
    return sorted(out, key=lambda c: str(c["type"]))


@dataclass(frozen=True)
class Observed:
    """What the cluster says about an endpoint's children right now."""

    desired_workers: int
    """Worker replicas the Deployment asks for (KEDA's choice when autoscaled)."""
    ready_workers: int
    """Worker pods passing readiness."""
    ready_routers: int | None
    """Router pods passing readiness; None when routing is off."""

    def conditions(self) -> list[Condition]:
        """``Ready`` and ``Progressing`` for these numbers."""
        workers = f"{self.ready_workers}/{self.desired_workers} workers ready"
        if self.ready_routers == 0:
            ready = Condition("Ready", "False", "WaitingForRouter", f"{workers}, router not ready")
        elif self.ready_workers == 0:
            reason = "ScaledToZero" if self.desired_workers == 0 else "WaitingForWorkers"
            ready = Condition("Ready", "False", reason, workers)
        else:
            ready = Condition("Ready", "True", "Serving", workers)
        if self.ready_workers < self.desired_workers:
            progressing = Condition("Progressing", "True", "RollingOut", workers)
        else:
            progressing = Condition("Progressing", "False", "Complete", workers)
        return [ready, progressing]


def _deployment_counts(api: ClusterApi, endpoint: Endpoint, component: str) -> tuple[int, int]:
    obj = api.get("apps/v1", "Deployment", endpoint.namespace, child_name(endpoint, component))
    if obj is None:
        return 0, 0
    desired = (obj.get("spec") or {}).get("replicas")
    ready = (obj.get("status") or {}).get("readyReplicas") or 0
    return (1 if desired is None else int(desired)), int(ready)


def observe(api: ClusterApi, endpoint: Endpoint) -> Observed:
    """Read the worker and router Deployments' status."""
    desired, ready = _deployment_counts(api, endpoint, WORKER)
    routers = None
    if endpoint.spec.intelligent_routing_spec.enabled:
        routers = _deployment_counts(api, endpoint, ROUTER)[1]
    return Observed(desired_workers=desired, ready_workers=ready, ready_routers=routers)


def status_fields(endpoint: Endpoint, options: RenderOptions, observed: Observed) -> dict[str, Any]:
    """The scalar status fields (conditions are merged separately)."""
    return {
        "replicas": observed.desired_workers,
        "readyReplicas": observed.ready_workers,
        "endpointUrl": endpoint_url(endpoint, options),
    }
