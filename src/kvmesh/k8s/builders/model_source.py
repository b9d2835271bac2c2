"""Model volume, mount and init containers from ``modelSourceConfig``.

One builder per ``modelSourceType``, picked from :data:`SOURCE_BUILDERS`.
Remote sources (s3, huggingface) are downloaded by an init container into an
``emptyDir``; local sources (pvc, hostPath) are mounted read-only, or copied
into an ``emptyDir`` first when ``prefetchEnabled`` (a slow network volume then
costs one sequential copy instead of random reads during model load).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvmesh.k8s.builders.common import RenderOptions
from kvmesh.k8s.spec import Endpoint

PREFETCH_SOURCE_DIR = "/model-source"
_HF_DOWNLOAD = (
    "import sys; from huggingface_hub import snapshot_download; "
    "snapshot_download(sys.argv[1], revision=sys.argv[2], local_dir=sys.argv[3])"
)


@dataclass(frozen=True)
class ModelVolume:
    """What a pod needs to see the model at ``model_dir``."""

    volumes: list[dict[str, Any]]
    """Pod volumes."""
    mount: dict[str, Any]
    """The main container's volume mount."""
    model_dir: str
    """Directory passed as ``--model`` / ``--model-dir``."""
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    """Containers that fetch the model before the main one starts."""


def _empty_dir_volume(endpoint: Endpoint) -> dict[str, Any]:
    return {"name": endpoint.spec.worker.model_volume_mount.name, "emptyDir": {}}


def _mount(endpoint: Endpoint, read_only: bool) -> dict[str, Any]:
    target = endpoint.spec.worker.model_volume_mount
    return {"name": target.name, "mountPath": target.mount_path, "readOnly": read_only}


def _init(name: str, image: str, command: list[str], mount: dict[str, Any],
          options: RenderOptions, env: list[dict[str, Any]] | None = None,
          extra_mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": options.image_pull_policy,
        "command": command,
        "volumeMounts": [{**mount, "readOnly": False}, *(extra_mounts or [])],
    }
    if env:
        container["env"] = env
    return container


def _s3(endpoint: Endpoint, options: RenderOptions) -> ModelVolume:
    source = endpoint.spec.model_source_config
    s3 = source.s3_storage
    assert s3 is not None  # guaranteed by ModelSourceConfig's validator
    mount = _mount(endpoint, read_only=True)
    uri = f"s3://{s3.bucket_name}/{source.model_location or ''}"
    command = ["aws", "s3", "sync", uri, mount["mountPath"], "--only-show-errors"]
    if s3.endpoint_url:
        command += ["--endpoint-url", s3.endpoint_url]
    env = [{"name": "AWS_REGION", "value": s3.region}] if s3.region else None
    init = _init("model-download", s3.downloader_image, command, mount, options, env)
    return ModelVolume([_empty_dir_volume(endpoint)], mount, mount["mountPath"], [init])


def _huggingface(endpoint: Endpoint, options: RenderOptions) -> ModelVolume:
    source = endpoint.spec.model_source_config
    hf = source.hugging_face_storage
    assert hf is not None  # guaranteed by ModelSourceConfig's validator
    mount = _mount(endpoint, read_only=True)
    command = ["python3", "-c", _HF_DOWNLOAD, hf.model_id, hf.revision, mount["mountPath"]]
    env = None
    if hf.token_secret_name:
        env = [{"name": "HF_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": hf.token_secret_name, "key": "token"}}}]
    init = _init("model-download", endpoint.spec.worker.image, command, mount, options, env)
    model_dir = posixpath.join(mount["mountPath"], source.model_location or "")
    return ModelVolume([_empty_dir_volume(endpoint)], mount, model_dir.rstrip("/"), [init])


def _local(endpoint: Endpoint, options: RenderOptions,
           source_volume: dict[str, Any]) -> ModelVolume:
    source = endpoint.spec.model_source_config
    location = source.model_location or ""
    if not source.prefetch_enabled:
        volume = {"name": endpoint.spec.worker.model_volume_mount.name, **source_volume}
        mount = _mount(endpoint, read_only=True)
        model_dir = posixpath.join(mount["mountPath"], location).rstrip("/")
        return ModelVolume([volume], mount, model_dir)
    # Prefetch: the source is mounted only in the init container, which copies
    # it into the emptyDir the worker reads.
    mount = _mount(endpoint, read_only=True)
    src_mount = {"name": "model-source", "mountPath": PREFETCH_SOURCE_DIR, "readOnly": True}
    src_dir = posixpath.join(PREFETCH_SOURCE_DIR, location).rstrip("/")
    command = ["cp", "-a", f"{src_dir}/.", mount["mountPath"]]
    init = _init("model-prefetch", endpoint.spec.worker.image, command, mount, options,
                 extra_mounts=[src_mount])
    volumes = [_empty_dir_volume(endpoint), {"name": "model-source", **source_volume}]
    return ModelVolume(volumes, mount, mount["mountPath"], [init])


def _pvc(endpoint: Endpoint, options: RenderOptions) -> ModelVolume:
    pvc = endpoint.spec.model_source_config.pvc_storage
    assert pvc is not None  # guaranteed by ModelSourceConfig's validator
    claim = {"claimName": pvc.claim_name, "readOnly": pvc.read_only}
    return _local(endpoint, options, {"persistentVolumeClaim": claim})


def _host_path(endpoint: Endpoint, options: RenderOptions) -> ModelVolume:
    host = endpoint.spec.model_source_config.host_path_storage
    assert host is not None  # guaranteed by ModelSourceConfig's validator
    return _local(endpoint, options, {"hostPath": {"path": host.path, "type": "Directory"}})


SOURCE_BUILDERS: dict[str, Callable[[Endpoint, RenderOptions], ModelVolume]] = {
    "s3": _s3,
    "huggingface": _huggingface,
    "pvc": _pvc,
    "hostPath": _host_path,
}
"""``modelSourceType`` -> builder of the model volume."""


def build_model_volume(endpoint: Endpoint, options: RenderOptions) -> ModelVolume:
    """The model volume for ``endpoint``'s source type."""
    return SOURCE_BUILDERS[endpoint.spec.model_source_config.model_source_type](endpoint, options)
