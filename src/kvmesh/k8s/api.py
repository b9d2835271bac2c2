"""The few Kubernetes API operations the operator performs, behind an ABC.

Handlers talk to :class:`ClusterApi` only, so tests run them against an
in-memory fake while the operator uses :class:`KubernetesClusterApi`
(server-side apply through the official client's dynamic API). The
``kubernetes`` and ``kopf`` imports stay inside methods: importing this
module costs nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from kvmesh.common.errors import BackendUnavailableError, TransportError

FIELD_MANAGER = "kvmesh-operator"
"""Server-side-apply field manager: the operator owns exactly the fields it renders."""


class ClusterApi(ABC):
    """Apply, read, list, delete and report on namespaced objects.

    Contract: ``apply`` is idempotent and converges the object to the manifest
    (fields the manifest omits are released, not kept); ``get`` and ``delete``
    return None / False for an object or kind that does not exist; any other
    API failure raises :class:`kvmesh.common.errors.TransportError`, except a
    kind whose CRD is not installed, which ``apply`` reports as
    :class:`kvmesh.common.errors.BackendUnavailableError`.
    """

    @abstractmethod
    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update ``manifest``; returns the object as stored."""

    @abstractmethod
    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None if absent."""

    @abstractmethod
    def list(self, api_version: str, kind: str, namespace: str,
             label_selector: str) -> list[dict[str, Any]]:
        """Objects of a kind matching ``k=v,...``; [] when the kind is not installed."""

    @abstractmethod
    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete (children cascade in the background); False if it was absent."""

    @abstractmethod
    def event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event (``Normal``/``Warning``) on ``body``."""


class KubernetesClusterApi(ClusterApi):
    """:class:`ClusterApi` over the official client (in-cluster or kubeconfig)."""

    def __init__(self, api_client: Any | None = None, discovery_cache: str | None = None) -> None:
        """``api_client``: a configured ``kubernetes.client.ApiClient`` (default: in-cluster
        service account, else kubeconfig). ``discovery_cache``: file for API discovery."""
        from kubernetes import client, config  # noqa: PLC0415 (lazy: heavy import)
        from kubernetes.dynamic import DynamicClient  # noqa: PLC0415

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        try:  # the dynamic client runs API discovery right away
            self._dynamic = DynamicClient(api_client, cache_file=discovery_cache)
        except Exception as exc:
            raise TransportError(f"Kubernetes API discovery failed: {exc}") from exc

    def _resource(self, api_version: str, kind: str) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError  # noqa: PLC0415

        try:
            return self._dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            raise TransportError(f"discover {kind} ({api_version}): {exc}") from exc

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        resource = self._resource(manifest["apiVersion"], manifest["kind"])
        if resource is None:
            raise BackendUnavailableError(
                f"{manifest['kind']} ({manifest['apiVersion']}) is not installed in the cluster")
        meta = manifest["metadata"]
        try:
            result = self._dynamic.server_side_apply(
                resource, body=dict(manifest), name=meta["name"], namespace=meta["namespace"],
                field_manager=FIELD_MANAGER, force_conflicts=True)
        except Exception as exc:  # the client raises ApiException and urllib3 errors
            raise TransportError(f"apply {manifest['kind']}/{meta['name']}: {exc}") from exc
        return result.to_dict()  # type: ignore[no-any-return]

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError  # noqa: PLC0415

        resource = self._resource(api_version, kind)
        if resource is None:
            return None
        try:
            found = resource.get(name=name, namespace=namespace)
        except NotFoundError:
            return None
        except Exception as exc:
            raise TransportError(f"get {kind}/{name}: {exc}") from exc
        return found.to_dict()  # type: ignore[no-any-return]

    def list(self, api_version: str, kind: str, namespace: str,
             label_selector: str) -> list[dict[str, Any]]:
        resource = self._resource(api_version, kind)
        if resource is None:
            return []
        try:
            found = resource.get(namespace=namespace, label_selector=label_selector)
        except Exception as exc:
            raise TransportError(f"list {kind}: {exc}") from exc
        return [item.to_dict() for item in found.items]

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        from kubernetes.dynamic.exceptions import NotFoundError  # noqa: PLC0415

        resource = self._resource(api_version, kind)
        if resource is None:
            return False
        try:
            resource.delete(name=name, namespace=namespace,
                            body={"propagationPolicy": "Background"})
        except NotFoundError:
            return False
        except Exception as exc:
            raise TransportError(f"delete {kind}/{name}: {exc}") from exc
        return True

    def event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        import kopf  # noqa: PLC0415 (kopf posts events from its own loop)

        kopf.event(body, type=type_, reason=reason, message=message)  # type: ignore[arg-type]
