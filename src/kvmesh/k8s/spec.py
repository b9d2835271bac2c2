"""Pydantic models of the ``InferenceEndpointConfig`` custom resource.

The models are the single source of truth for the resource's schema: the CRD
in ``deploy/crds/`` is generated from them (:mod:`kvmesh.k8s.crd`) and a test
checks that the checked-in file is current. Field names are snake_case in
Python and HyperPod's camelCase on the wire (``enableL1Cache``, ...); fields
HyperPod does not have are marked *kvmesh extension* in their docstring.
The models are split over three modules (:mod:`kvmesh.k8s.spec_base`,
:mod:`kvmesh.k8s.spec_workload` and this one); import them from here.

Every model forbids unknown fields, so a typo is an error that names the
field path instead of a silently ignored setting. :func:`parse_endpoint` turns
a pydantic ``ValidationError`` into :class:`InvalidSpecError`, whose messages
read ``spec.kvCacheSpec.l2CacheSpec.l2CacheBackend: Input should be ...``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from kvmesh.common.units import parse_duration_s, parse_size
from kvmesh.k8s.spec_base import (
    API_VERSION,
    DNS_LABEL_PATTERN,
    DURATION_PATTERN,
    GROUP,
    KIND,
    MAX_ENDPOINT_NAME_LEN,
    PLURAL,
    PROM_DURATION_PATTERN,
    SIZE_PATTERN,
    VERSION,
    EvictionPolicy,
    InvalidSpecError,
    L2Backend,
    RoutingStrategy,
    SpecModel,
)
from kvmesh.k8s.spec_workload import ModelSourceConfig, WorkerSpec

__all__ = [
    "API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION", "AutoScalingSpec", "Endpoint",
    "EndpointSpec", "IntelligentRoutingSpec", "InvalidSpecError", "KvCacheSpec", "L2CacheSpec",
    "MetricsSpec", "ModelSourceConfig", "PrometheusTrigger", "TieredStorageSpec", "WorkerSpec",
    "format_validation_error", "parse_endpoint", "parse_spec",
]

# --- KV cache --------------------------------------------------------------------------------


class TieredStorageSpec(SpecModel):
    memory_size: str = Field(default="4GiB", pattern=SIZE_PATTERN)
    """kvmesh extension: shared-memory budget of each node's ``kvmesh store``."""
    port: int = Field(default=9200, ge=1024, le=65535)
    """kvmesh extension: store port, bound on the node (hostPort) so workers reach it."""
    metrics_port: int = Field(default=9201, ge=1024, le=65535)
    """kvmesh extension: the store's Prometheus port."""
    shm_host_path: str = Field(default="/dev/shm", pattern=r"^/")
    """kvmesh extension: node directory shared by the store and the workers."""

    @model_validator(mode="after")
    def _ports_differ(self) -> TieredStorageSpec:
        if self.port == self.metrics_port:
            raise ValueError("port and metricsPort must differ")
        return self


class L2CacheSpec(SpecModel):
    l2_cache_backend: L2Backend
    """``redis`` (an existing Redis/Valkey) or ``tieredstorage`` (kvmesh store per node)."""
    l2_cache_local_url: str | None = Field(default=None, pattern=r"^rediss?://[^\s]+$")
    """Redis URL (``redis://`` or ``rediss://``); required for redis, unused otherwise."""
    l2_deadline: str = Field(default="100ms", pattern=DURATION_PATTERN)
    """kvmesh extension: an L2 lookup slower than this falls back to recompute."""
    tiered_storage: TieredStorageSpec = Field(default={}, validate_default=True)
    """kvmesh extension: settings of the node-local store (tieredstorage only)."""

    @model_validator(mode="after")
    def _url_matches_backend(self) -> L2CacheSpec:
        if self.l2_cache_backend == "redis" and not self.l2_cache_local_url:
            raise ValueError("l2CacheLocalUrl is required when l2CacheBackend is redis")
        if self.l2_cache_backend == "tieredstorage" and self.l2_cache_local_url:
            raise ValueError(
                "l2CacheLocalUrl must be empty when l2CacheBackend is tieredstorage "
                "(workers reach the store on their node)"
            )
        if parse_duration_s(self.l2_deadline) > 10.0:
            raise ValueError(f"l2Deadline {self.l2_deadline} exceeds 10s; recompute is faster")
        return self


class KvCacheSpec(SpecModel):
    enable_l1_cache: bool = True
    """Keep KV chunks in node CPU memory (HyperPod: "CPU offloading")."""
    enable_l2_cache: bool = False
    """Share KV chunks cluster-wide through ``l2CacheSpec``."""
    l2_cache_spec: L2CacheSpec | None = None
    """Which L2 backend; required when ``enableL2Cache`` is true."""
    l1_cache_size: str = Field(default="4GiB", pattern=SIZE_PATTERN)
    """kvmesh extension: L1 byte budget per worker (``--l1-size``)."""
    eviction_policy: EvictionPolicy = "lru"
    """kvmesh extension: L1 eviction policy."""
    chunk_size: int = Field(default=256, ge=16, le=8192, multiple_of=16)
    """kvmesh extension: tokens per KV chunk; a multiple of vLLM's 16-token block."""

    @model_validator(mode="after")
    def _consistent(self) -> KvCacheSpec:
        if self.enable_l2_cache and self.l2_cache_spec is None:
            raise ValueError("l2CacheSpec is required when enableL2Cache is true")
        if self.enable_l1_cache and parse_size(self.l1_cache_size) == 0:
            raise ValueError("l1CacheSize is 0; set enableL1Cache: false to disable L1")
        return self


# --- routing and autoscaling -------------------------------------------------------------------


class PrometheusTrigger(SpecModel):
    server_address: str = Field(pattern=r"^https?://")
    """Prometheus base URL KEDA queries."""
    query: str = Field(min_length=1)
    """PromQL returning one number, for example in-flight requests per worker."""
    target_value: float = Field(gt=0)
    """Desired value per replica (AverageValue) or in total (Value)."""
    activation_target_value: float = Field(default=0, ge=0)
    """Below this, KEDA may scale to ``minReplicaCount`` 0."""
    metric_type: Literal["AverageValue", "Value"] = "AverageValue"
    """How KEDA compares the query result with ``targetValue``."""
    name: str | None = Field(default=None, pattern=DNS_LABEL_PATTERN)
    """Optional trigger name shown in HPA metrics."""


class AutoScalingSpec(SpecModel):
    min_replica_count: int = Field(default=1, ge=0)
    """Fewest workers; 0 lets KEDA scale to zero."""
    max_replica_count: int = Field(default=4, ge=1)
    """Most workers."""
    polling_interval: int = Field(default=30, ge=1)
    """Seconds between trigger evaluations."""
    cooldown_period: int = Field(default=300, ge=0)
    """Seconds after the last active trigger before scaling to zero."""
    initial_cooldown_period: int = Field(default=0, ge=0)
    """Seconds after creation before scaling to zero is allowed."""
    scale_up_stabilization_time: int = Field(default=0, ge=0, le=3600)
    """HPA scale-up stabilization window, in seconds."""
    scale_down_stabilization_time: int = Field(default=300, ge=0, le=3600)
    """HPA scale-down stabilization window, in seconds."""
    prometheus_trigger: PrometheusTrigger
    """The metric that drives scaling."""

    @model_validator(mode="after")
    def _bounds(self) -> AutoScalingSpec:
        if self.min_replica_count > self.max_replica_count:
            raise ValueError("minReplicaCount must be <= maxReplicaCount")
        return self


class IntelligentRoutingSpec(SpecModel):
    enabled: bool = False
    """Deploy the kvmesh router in front of the workers. May be turned on later."""
    routing_strategy: RoutingStrategy = "prefixaware"
    """How the router picks a worker."""
    auto_scaling_spec: AutoScalingSpec | None = None
    """KEDA ScaledObject for the worker Deployment."""
    router_replicas: int = Field(default=1, ge=1, le=64)
    """kvmesh extension: router pods (they converge through KV events)."""
    session_key: str = Field(default="x-session-id", pattern=r"^[A-Za-z0-9_.-]+$")
    """kvmesh extension: header or body key of the ``session`` strategy."""
    router_image: str | None = None
    """kvmesh extension: router image (default: the operator's kvmesh image)."""


# --- observability, load balancer, TLS -----------------------------------------------------------


class ModelMetrics(SpecModel):
    port: int | None = Field(default=None, ge=1, le=65535)
    """Metrics port of the worker (default: the invocation port)."""
    path: str = Field(default="/metrics", pattern=r"^/")
    """Metrics path."""


class MetricsSpec(SpecModel):
    enabled: bool = False
    """Create a Prometheus-operator monitor for workers, router and store."""
    model_metrics: ModelMetrics = Field(default={}, validate_default=True)
    """Where the worker exposes metrics."""
    monitor_kind: Literal["PodMonitor", "ServiceMonitor"] = "PodMonitor"
    """kvmesh extension: which monitor resource to create."""
    scrape_interval: str = Field(default="30s", pattern=PROM_DURATION_PATTERN)
    """kvmesh extension: scrape interval."""


class LoadBalancerSpec(SpecModel):
    health_check_path: str = Field(default="/health", pattern=r"^/")
    """Path of readiness and liveness probes."""


class TlsConfig(SpecModel):
    tls_certificate_output_s3_uri: str | None = Field(default=None, pattern=r"^s3://")
    """HyperPod field, accepted for compatibility; kvmesh serves plain HTTP (see docs)."""


class EndpointSpec(SpecModel):
    """``spec`` of an ``InferenceEndpointConfig``."""

    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
    """Name clients put in the OpenAI ``model`` field (``--served-model-name``)."""
    replicas: int = Field(default=1, ge=0)
    """Worker pods (ignored while autoscaling owns the count)."""
    invocation_endpoint: str = Field(
        default="v1/chat/completions", pattern=r"^/?[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$"
    )
    """API path clients call; appended to the endpoint URL in the status."""
    model_source_config: ModelSourceConfig
    """Where the model comes from."""
    instance_type: str | None = Field(default=None, min_length=1)
    """Single node instance type (``node.kubernetes.io/instance-type``)."""
    instance_types: list[str] | None = Field(default=None, min_length=1, max_length=16)
    """Instance types in priority order; scheduling falls back down the list."""
    node_affinity: dict[str, Any] | None = None
    """A raw Kubernetes ``NodeAffinity``, merged with the instance-type terms."""
    worker: WorkerSpec
    """The inference worker pods."""
    kv_cache_spec: KvCacheSpec = Field(default={}, validate_default=True)
    """Tiered KV cache settings."""
    intelligent_routing_spec: IntelligentRoutingSpec = Field(default={}, validate_default=True)
    """Router and autoscaling."""
    metrics: MetricsSpec = Field(default={}, validate_default=True)
    """Prometheus scraping."""
    load_balancer: LoadBalancerSpec = Field(default={}, validate_default=True)
    """Health-check settings."""
    tls_config: TlsConfig | None = None
    """HyperPod TLS settings (accepted, not implemented)."""

    @field_validator("instance_types")
    @classmethod
    def _unique_types(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("instance types must be unique")
        return value

    @model_validator(mode="after")
    def _one_instance_field(self) -> EndpointSpec:
        if self.instance_type is not None and self.instance_types is not None:
            raise ValueError("set instanceType or instanceTypes, not both")
        metrics_port = self.metrics.model_metrics.port
        serving_port = self.worker.model_invocation_port.container_port
        if metrics_port is not None and metrics_port != serving_port:
            raise ValueError(
                "metrics.modelMetrics.port must equal worker.modelInvocationPort.containerPort "
                "(kvmesh workers serve /metrics on their serving port)"
            )
        return self

    @property
    def instance_type_priority(self) -> list[str]:
        """Instance types in priority order ([] when unconstrained)."""
        if self.instance_types is not None:
            return list(self.instance_types)
        return [self.instance_type] if self.instance_type else []


@dataclass(frozen=True)
class Endpoint:
    """A validated resource: identity from ``metadata`` plus the parsed spec."""

    name: str
    namespace: str
    spec: EndpointSpec
    uid: str | None = None
    generation: int | None = None


def format_validation_error(exc: ValidationError, root: str = "spec") -> list[str]:
    """One ``path: message`` line per error, with HyperPod's camelCase path."""
    lines = []
    for err in exc.errors():
        path = root
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return lines


_DNS_LABEL_RE = re.compile(DNS_LABEL_PATTERN)


def parse_spec(spec: Mapping[str, Any] | None) -> EndpointSpec:
    """Validate a raw ``spec``; :class:`InvalidSpecError` lists every bad field."""
    try:
        return EndpointSpec.model_validate(dict(spec or {}))
    except ValidationError as exc:
        raise InvalidSpecError(format_validation_error(exc)) from None


def parse_endpoint(body: Mapping[str, Any]) -> Endpoint:
    """Validate a whole custom resource (apiVersion, kind, metadata and spec)."""
    errors: list[str] = []
    if body.get("apiVersion") != API_VERSION:
        errors.append(f"apiVersion: must be {API_VERSION}, got {body.get('apiVersion')!r}")
    if body.get("kind") != KIND:
        errors.append(f"kind: must be {KIND}, got {body.get('kind')!r}")
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    if not _DNS_LABEL_RE.match(name) or len(name) > MAX_ENDPOINT_NAME_LEN:
        errors.append(
            f"metadata.name: {name!r} must be a DNS label of at most "
            f"{MAX_ENDPOINT_NAME_LEN} characters"
        )
    spec: EndpointSpec | None = None
    try:
        spec = parse_spec(body.get("spec"))
    except InvalidSpecError as exc:
        errors.extend(exc.messages)
    if errors or spec is None:
        raise InvalidSpecError(errors)
    return Endpoint(
        name=name,
        namespace=str(meta.get("namespace") or "default"),
        spec=spec,
        uid=meta.get("uid"),
        generation=meta.get("generation"),
    )
