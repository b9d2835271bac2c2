"""A KEDA ScaledObject (``keda.sh/v1alpha1``) from ``autoScalingSpec``.

KEDA owns the worker Deployment's replica count while it exists, which is
why the worker builder leaves ``replicas`` out then (two writers would fight).
"""

from __future__ import annotations

from typing import Any

from kvmesh.k8s.builders.common import WORKER, Manifest, RenderOptions, child_name, metadata
from kvmesh.k8s.spec import Endpoint, PrometheusTrigger


def _number(value: float) -> str:
    # KEDA reads trigger metadata as strings; "10" rather than "10.0".
    return str(int(value)) if float(value).is_integer() else str(value)


def _trigger(trigger: PrometheusTrigger) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "prometheus",
        "metricType": trigger.metric_type,
        "metadata": {
            "serverAddress": trigger.server_address,
            "query": trigger.query,
            "threshold": _number(trigger.target_value),
            "activationThreshold": _number(trigger.activation_target_value),
        },
    }
    if trigger.name:
        out["name"] = trigger.name
    return out


def build_scaled_object(endpoint: Endpoint, options: RenderOptions) -> list[Manifest]:
    """The ScaledObject targeting the worker Deployment, or none without autoscaling."""
    scaling = endpoint.spec.intelligent_routing_spec.auto_scaling_spec
    if scaling is None:
        return []
    target = child_name(endpoint, WORKER)
    return [{
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(endpoint, target, WORKER),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicaCount": scaling.min_replica_count,
            "maxReplicaCount": scaling.max_replica_count,
            "pollingInterval": scaling.polling_interval,
            "cooldownPeriod": scaling.cooldown_period,
            "initialCooldownPeriod": scaling.initial_cooldown_period,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleUp": {"stabilizationWindowSeconds": scaling.scale_up_stabilization_time},
                "scaleDown": {"stabilizationWindowSeconds":
                              scaling.scale_down_stabilization_time},
            }}},
            "triggers": [_trigger(scaling.prometheus_trigger)],
        },
    }]
