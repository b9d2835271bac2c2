"""The router Deployment and Service (``kvmesh router``), plus its RBAC.

Flag mapping (``kvmesh router``)::

    --k8s-namespace NS      the resource's namespace
    --k8s-selector SEL      kubernetes.io/service-name=NAME-worker: the worker Service's
                            EndpointSlices (ready addresses; ports "http" and "kv-events")
    --k8s-port N            worker.modelInvocationPort.containerPort
    --chunk-size N          kvCacheSpec.chunkSize (chain hashes must match the workers')
    --routing-strategy S    intelligentRoutingSpec.routingStrategy
    --session-key K         intelligentRoutingSpec.sessionKey (session only)
    --model-dir DIR         the model volume (kvaware only: it hashes token ids)
    --model-id NAME         spec.modelName, the id workers hash (kvaware only)
    --host 0.0.0.0 --port N reachable through the router Service
"""

from __future__ import annotations

from typing import Any

from kvmesh.k8s.builders.common import (
    ROUTER,
    WORKER,
    Manifest,
    RenderOptions,
    child_name,
    http_probe,
    metadata,
    selector_labels,
)
from kvmesh.k8s.builders.model_source import ModelVolume, build_model_volume
from kvmesh.k8s.builders.rbac import build_router_rbac
from kvmesh.k8s.spec import Endpoint

ROUTER_HEALTH_PATH = "/health"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""Label the EndpointSlice controller puts on every slice of a Service."""


def router_args(endpoint: Endpoint, options: RenderOptions, model_dir: str | None) -> list[str]:
    """The ``kvmesh router`` arguments (after the command itself)."""
    routing = endpoint.spec.intelligent_routing_spec
    args = [
        "--k8s-namespace", endpoint.namespace,
        "--k8s-selector", f"{SERVICE_NAME_LABEL}={child_name(endpoint, WORKER)}",
        "--k8s-port", str(endpoint.spec.worker.model_invocation_port.container_port),
        "--routing-strategy", routing.routing_strategy,
        "--chunk-size", str(endpoint.spec.kv_cache_spec.chunk_size),
        "--host", "0.0.0.0",
        "--port", str(options.router_port),
    ]
    if routing.routing_strategy == "session":
        args += ["--session-key", routing.session_key]
    if model_dir is not None:
        args += ["--model-dir", model_dir, "--model-id", endpoint.spec.model_name]
    return args


def _needs_model(endpoint: Endpoint) -> bool:
    return endpoint.spec.intelligent_routing_spec.routing_strategy == "kvaware"


def _pod_spec(endpoint: Endpoint, options: RenderOptions,
              model: ModelVolume | None) -> dict[str, Any]:
    routing = endpoint.spec.intelligent_routing_spec
    container: dict[str, Any] = {
        "name": ROUTER,
        "image": routing.router_image or options.kvmesh_image,
        "imagePullPolicy": options.image_pull_policy,
        "command": ["kvmesh", "router"],
        "args": router_args(endpoint, options, model.model_dir if model else None),
        "ports": [{"name": "http", "containerPort": options.router_port, "protocol": "TCP"}],
        "readinessProbe": http_probe(ROUTER_HEALTH_PATH, "http", period_s=5, failures=3),
        # /health answers 503 while no worker is up: right for readiness, but a
        # liveness probe on it would restart healthy routers during a worker outage.
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10,
                          "failureThreshold": 3},
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}},
    }
    pod: dict[str, Any] = {
        "serviceAccountName": child_name(endpoint, ROUTER),
        "containers": [container],
    }
    if model is not None:
        container["volumeMounts"] = [model.mount]
        pod["volumes"] = model.volumes
        if model.init_containers:
            pod["initContainers"] = model.init_containers
    return pod


def build_router_deployment(endpoint: Endpoint, options: RenderOptions) -> Manifest:
    """The router Deployment; ``kvaware`` routers also mount the model (tokenizer)."""
    model = build_model_volume(endpoint, options) if _needs_model(endpoint) else None
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(endpoint, child_name(endpoint, ROUTER), ROUTER),
        "spec": {
            "replicas": endpoint.spec.intelligent_routing_spec.router_replicas,
            "selector": {"matchLabels": selector_labels(endpoint, ROUTER)},
            "template": {
                "metadata": {"labels": selector_labels(endpoint, ROUTER)},
                "spec": _pod_spec(endpoint, options, model),
            },
        },
    }


def build_router_service(endpoint: Endpoint, options: RenderOptions) -> Manifest:
    """ClusterIP Service clients call when routing is enabled."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(endpoint, child_name(endpoint, ROUTER), ROUTER),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(endpoint, ROUTER),
            "ports": [{"name": "http", "port": options.router_port, "targetPort": "http",
                       "protocol": "TCP"}],
        },
    }


def build_router(endpoint: Endpoint, options: RenderOptions) -> list[Manifest]:
    """Every router child, or none when routing is disabled."""
    if not endpoint.spec.intelligent_routing_spec.enabled:
        return []
    return [
        *build_router_rbac(endpoint, options),
        build_router_deployment(endpoint, options),
        build_router_service(endpoint, options),
    ]
