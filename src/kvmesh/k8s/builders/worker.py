"""The worker Deployment and Service: ``kvmesh worker`` with flags from ``kvCacheSpec``.

Flag mapping (``kvmesh worker``)::

    --model DIR               model volume (modelSourceConfig + worker.modelVolumeMount)
    --served-model-name NAME  spec.modelName
    --host 0.0.0.0 --port N   worker.modelInvocationPort.containerPort
    --l1-size SIZE            kvCacheSpec.l1CacheSize, or 0 when enableL1Cache is false
    --eviction-policy P       kvCacheSpec.evictionPolicy
    --chunk-size N            kvCacheSpec.chunkSize
    --l2-url URL              redis: l2CacheLocalUrl; tieredstorage: kvmesh://$(HOST_IP):PORT
    --l2-deadline D           l2CacheSpec.l2Deadline
    --kv-events-port N        only with routingStrategy kvaware
    -- ARGS                   worker.args (extra vLLM engine arguments)
"""

from __future__ import annotations

from typing import Any

from kvmesh.k8s.builders.affinity import build_affinity
from kvmesh.k8s.builders.common import (
    WORKER,
    Manifest,
    RenderOptions,
    child_name,
    http_probe,
    metadata,
    selector_labels,
)
from kvmesh.k8s.builders.model_source import build_model_volume
from kvmesh.k8s.spec import Endpoint

HOST_IP_ENV = "HOST_IP"
SHM_VOLUME = "kv-shm"
KV_EVENTS_PORT_NAME = "kv-events"
"""Port name the router's discovery looks for on EndpointSlices."""
KV_EVENTS_ANNOTATION = "kvmesh.io/kv-events-port"
"""Pod annotation the router's pod-based discovery reads instead."""


def uses_tiered_storage(endpoint: Endpoint) -> bool:
    """True when L2 is the node-local ``kvmesh store``."""
    kv = endpoint.spec.kv_cache_spec
    return bool(kv.enable_l2_cache and kv.l2_cache_spec
                and kv.l2_cache_spec.l2_cache_backend == "tieredstorage")


def publishes_kv_events(endpoint: Endpoint) -> bool:
    """Workers publish KV events only for a router that consumes them."""
    routing = endpoint.spec.intelligent_routing_spec
    return routing.enabled and routing.routing_strategy == "kvaware"


def l2_url(endpoint: Endpoint) -> str | None:
    """The ``--l2-url`` value, or None when L2 is off."""
    kv = endpoint.spec.kv_cache_spec
    if not kv.enable_l2_cache or kv.l2_cache_spec is None:
        return None
    if kv.l2_cache_spec.l2_cache_backend == "redis":
        return kv.l2_cache_spec.l2_cache_local_url
    # Kubernetes expands $(HOST_IP) in args from the container's env (downward API).
    return f"kvmesh://$({HOST_IP_ENV}):{kv.l2_cache_spec.tiered_storage.port}"


def worker_args(endpoint: Endpoint, options: RenderOptions, model_dir: str) -> list[str]:
    """The ``kvmesh worker`` arguments (after the command itself)."""
    spec = endpoint.spec
    kv = spec.kv_cache_spec
    args = [
        "--model", model_dir,
        "--served-model-name", spec.model_name,
        "--host", "0.0.0.0",
        "--port", str(spec.worker.model_invocation_port.container_port),
        "--l1-size", kv.l1_cache_size if kv.enable_l1_cache else "0",
        "--eviction-policy", kv.eviction_policy,
        "--chunk-size", str(kv.chunk_size),
    ]
    url = l2_url(endpoint)
    if url is not None and kv.l2_cache_spec is not None:
        args += ["--l2-url", url, "--l2-deadline", kv.l2_cache_spec.l2_deadline]
    if publishes_kv_events(endpoint):
        args += ["--kv-events-port", str(options.kv_events_port)]
    if spec.worker.args:
        args += ["--", *spec.worker.args]
    return args


def shm_volume(endpoint: Endpoint) -> dict[str, Any]:
    """The node directory shared by the store and the workers (zero-copy reads)."""
    kv = endpoint.spec.kv_cache_spec
    assert kv.l2_cache_spec is not None  # only called for tieredstorage
    path = kv.l2_cache_spec.tiered_storage.shm_host_path
    return {"name": SHM_VOLUME, "hostPath": {"path": path, "type": "Directory"}}


def _env(endpoint: Endpoint) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    if uses_tiered_storage(endpoint):
        env.append({"name": HOST_IP_ENV,
                    "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}})
    env += [var.model_dump(by_alias=True, exclude_none=True)
            for var in endpoint.spec.worker.environment_variables]
    return env


def _container(endpoint: Endpoint, options: RenderOptions, model_dir: str,
               mounts: list[dict[str, Any]]) -> dict[str, Any]:
    worker = endpoint.spec.worker
    port = worker.model_invocation_port
    health = endpoint.spec.load_balancer.health_check_path
    ports = [{"name": port.name, "containerPort": port.container_port, "protocol": "TCP"}]
    if publishes_kv_events(endpoint):
        ports.append({"name": KV_EVENTS_PORT_NAME, "containerPort": options.kv_events_port,
                      "protocol": "TCP"})
    container: dict[str, Any] = {
        "name": WORKER,
        "image": worker.image,
        "imagePullPolicy": options.image_pull_policy,
        "command": ["kvmesh", "worker"],
        "args": worker_args(endpoint, options, model_dir),
        "ports": ports,
        "volumeMounts": mounts,
        "resources": worker.resources.model_dump(by_alias=True, exclude_defaults=True),
        # Model load can take many minutes: the startup probe holds liveness
        # off for up to 30 min, after which liveness restarts a hung engine.
        "startupProbe": http_probe(health, port.name, period_s=10, failures=180),
        "readinessProbe": http_probe(health, port.name, period_s=5, failures=3),
        "livenessProbe": http_probe(health, port.name, period_s=10, failures=6),
    }
    env = _env(endpoint)
    if env:
        container["env"] = env
    return container


def build_worker_deployment(endpoint: Endpoint, options: RenderOptions) -> Manifest:
    """The worker Deployment; ``replicas`` is left to KEDA when autoscaling is on."""
    model = build_model_volume(endpoint, options)
    volumes, mounts = list(model.volumes), [model.mount]
    if uses_tiered_storage(endpoint):
        volumes.append(shm_volume(endpoint))
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    pod_spec: dict[str, Any] = {
        "containers": [_container(endpoint, options, model.model_dir, mounts)],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 60,
    }
    if model.init_containers:
        pod_spec["initContainers"] = model.init_containers
    affinity = build_affinity(endpoint)
    if affinity:
        pod_spec["affinity"] = affinity
    pod_meta: dict[str, Any] = {"labels": selector_labels(endpoint, WORKER)}
    if publishes_kv_events(endpoint):
        pod_meta["annotations"] = {KV_EVENTS_ANNOTATION: str(options.kv_events_port)}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(endpoint, WORKER)},
        "template": {"metadata": pod_meta, "spec": pod_spec},
    }
    if endpoint.spec.intelligent_routing_spec.auto_scaling_spec is None:
        spec = {"replicas": endpoint.spec.replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(endpoint, child_name(endpoint, WORKER), WORKER),
        "spec": spec,
    }


def build_worker_service(endpoint: Endpoint, options: RenderOptions) -> Manifest:
    """ClusterIP Service of the workers; the router discovers its EndpointSlices."""
    port = endpoint.spec.worker.model_invocation_port
    ports = [{"name": port.name, "port": port.container_port, "targetPort": port.name,
              "protocol": "TCP"}]
    if publishes_kv_events(endpoint):
        ports.append({"name": KV_EVENTS_PORT_NAME, "port": options.kv_events_port,
                      "targetPort": KV_EVENTS_PORT_NAME, "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(endpoint, child_name(endpoint, WORKER), WORKER),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(endpoint, WORKER),
            "ports": ports,
        },
    }


def build_worker(endpoint: Endpoint, options: RenderOptions) -> list[Manifest]:
    """Every worker child: Deployment and Service."""
    return [build_worker_deployment(endpoint, options), build_worker_service(endpoint, options)]
