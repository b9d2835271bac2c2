"""Shared pieces of the ``InferenceEndpointConfig`` models: identity, patterns, base model.

Patterns are shared by the pydantic validators and (through the generated
CRD) the API server, so both reject the same strings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "inference.kvmesh.dev"
VERSION = "v1alpha1"
KIND = "InferenceEndpointConfig"
PLURAL = "inferenceendpointconfigs"
API_VERSION = f"{GROUP}/{VERSION}"

SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?([KMGT](iB|B)?|B)?$"
"""Sizes as kvmesh flags take them (``4GiB``, ``512MiB``, ``2GB``), not k8s quantities."""
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s)$"
"""Durations as kvmesh flags take them (``100ms``, ``1.5s``)."""
PROM_DURATION_PATTERN = r"^[0-9]+(ms|s|m|h)$"
"""Prometheus-operator durations (``30s``, ``1m``)."""
DNS_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
MAX_ENDPOINT_NAME_LEN = 45
"""Child names append up to 18 characters (``-router-metrics``); DNS labels stop at 63."""

RoutingStrategy = Literal["prefixaware", "kvaware", "session", "roundrobin"]
EvictionPolicy = Literal["lru", "lfu", "fifo"]
ModelSourceType = Literal["s3", "pvc", "hostPath", "huggingface"]


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _case_insensitive_enum(schema: dict[str, Any]) -> None:
    # HyperPod accepts the backend in any case; the CRD must too, so the enum
    # becomes an anchored case-insensitive pattern (Go RE2 and Python agree on it).
    values = schema.pop("enum")
    schema["pattern"] = "^(?i:" + "|".join(values) + ")$"


L2Backend = Annotated[
    Literal["redis", "tieredstorage"],
    BeforeValidator(_lower),
    Field(json_schema_extra=_case_insensitive_enum),
]
Quantity = int | str


class InvalidSpecError(ValueError):
    """The resource does not describe a valid endpoint; ``messages`` name each field."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


class SpecModel(BaseModel):
    """Base of every spec model: camelCase aliases, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        alias_generator=to_camel,
        use_attribute_docstrings=True,
    )
