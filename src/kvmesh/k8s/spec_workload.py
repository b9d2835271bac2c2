"""Models of where the model comes from (``modelSourceConfig``) and the worker pods (``worker``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from pydantic.alias_generators import to_camel

from kvmesh.k8s.spec_base import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    ModelSourceType,
    Quantity,
    SpecModel,
)

# --- model source -------------------------------------------------------------------------


class S3Storage(SpecModel):
    bucket_name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    """S3 bucket holding the model; ``modelLocation`` is the key prefix."""
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
    """AWS region of the bucket (default: the downloader's environment)."""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """kvmesh extension: an S3-compatible endpoint (MinIO, Ceph)."""
    downloader_image: str = "amazon/aws-cli:2.17.0"
    """kvmesh extension: init-container image that runs ``aws s3 sync``."""


class PvcStorage(SpecModel):
    claim_name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)
    """Name of a PersistentVolumeClaim in the endpoint's namespace."""
    read_only: bool = True
    """Mount the claim read-only (workers never write to the model)."""


class HostPathStorage(SpecModel):
    path: str = Field(pattern=r"^/")
    """Absolute directory on every node that may run a worker."""


class HuggingFaceStorage(SpecModel):
    model_id: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
    """Hugging Face repository id, for example ``Qwen/Qwen2.5-0.5B-Instruct``."""
    revision: str = "main"
    """Branch, tag or commit to download."""
    token_secret_name: str | None = None
    """Secret with key ``token`` holding ``HF_TOKEN`` for gated models."""


class ModelSourceConfig(SpecModel):
    model_source_type: ModelSourceType
    """Where the weights come from; the matching ``*Storage`` block is required."""
    s3_storage: S3Storage | None = None
    """Downloaded by an init container into an ``emptyDir``."""
    pvc_storage: PvcStorage | None = None
    """kvmesh extension: mounted directly (HyperPod's ``fsxStorage`` maps to a PVC)."""
    host_path_storage: HostPathStorage | None = None
    """kvmesh extension: a node directory, mounted read-only."""
    hugging_face_storage: HuggingFaceStorage | None = None
    """kvmesh extension: downloaded by an init container (clusters with egress)."""
    model_location: str | None = Field(default=None, pattern=r"^[^/].*$")
    """Relative path of the model inside the source (S3 key prefix or sub-directory)."""
    prefetch_enabled: bool = False
    """For pvc/hostPath: copy the model into a pod-local ``emptyDir`` before start."""

    @model_validator(mode="after")
    def _one_storage(self) -> ModelSourceConfig:
        expected = _STORAGE_FIELD[self.model_source_type]
        for kind, attr in _STORAGE_FIELD.items():
            given = getattr(self, attr) is not None
            if attr == expected and not given:
                raise ValueError(f"{to_camel(attr)} is required when modelSourceType is {kind}")
            if attr != expected and given:
                raise ValueError(
                    f"{to_camel(attr)} is not allowed when modelSourceType is "
                    f"{self.model_source_type}"
                )
        return self


_STORAGE_FIELD: dict[str, str] = {
    "s3": "s3_storage",
    "pvc": "pvc_storage",
    "hostPath": "host_path_storage",
    "huggingface": "hugging_face_storage",
}


# --- worker ----------------------------------------------------------------------------------


class ResourceRequirements(SpecModel):
    limits: dict[str, Quantity] = Field(default={})
    """Kubernetes resource limits, for example ``{"nvidia.com/gpu": 1}``."""
    requests: dict[str, Quantity] = Field(default={})
    """Kubernetes resource requests."""


class ContainerPort(SpecModel):
    container_port: int = Field(default=8000, ge=1, le=65535)
    """Port the worker serves the OpenAI API, ``/health`` and ``/metrics`` on."""
    name: str = Field(default="http", pattern=r"^[a-z]([-a-z0-9]{0,13}[a-z0-9])?$")
    """Name of the container port (a 15-character IANA service name)."""


class VolumeMount(SpecModel):
    name: str = Field(default="model-weights", pattern=DNS_LABEL_PATTERN)
    """Name of the pod volume that holds the model."""
    mount_path: str = Field(default="/opt/ml/model", pattern=r"^/")
    """Where the model is mounted in the worker; passed as ``--model``."""


class EnvVar(SpecModel):
    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Environment variable name."""
    value: str | None = None
    """Literal value."""
    value_from: dict[str, Any] | None = None
    """A Kubernetes ``EnvVarSource`` (secretKeyRef, configMapKeyRef, fieldRef ...)."""


class WorkerSpec(SpecModel):
    image: str = Field(min_length=1)
    """Container image with kvmesh and vLLM installed."""
    args: list[str] = Field(default=[])
    """Extra vLLM engine arguments, passed after ``--`` to ``kvmesh worker``."""
    resources: ResourceRequirements = Field(default={}, validate_default=True)
    """CPU, memory and accelerator requests and limits."""
    model_invocation_port: ContainerPort = Field(default={}, validate_default=True)
    """The serving port."""
    model_volume_mount: VolumeMount = Field(default={}, validate_default=True)
    """Where the model volume is mounted."""
    environment_variables: list[EnvVar] = Field(default=[])
    """Extra environment for the worker container."""
