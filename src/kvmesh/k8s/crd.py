"""Generate the ``InferenceEndpointConfig`` CRD from the pydantic models.

The pydantic JSON schema is close to, but not, a Kubernetes *structural*
schema, so :func:`structural` rewrites it:

- ``$ref`` into ``$defs`` is inlined (CRDs allow no references);
- ``anyOf [X, null]`` (an optional field) becomes ``X``;
- ``anyOf [integer, string]`` keeps its branches and gains
  ``x-kubernetes-int-or-string`` (resource quantities);
- a free-form object (``dict[str, Any]``: raw ``nodeAffinity``) becomes
  ``x-kubernetes-preserve-unknown-fields``;
- ``title`` and ``additionalProperties: false`` go: the API server prunes
  unknown fields and ``kubectl apply`` (strict field validation) rejects them;
- JSON Schema 2020's numeric ``exclusiveMinimum: 0`` becomes OpenAPI 3.0's
  ``minimum: 0, exclusiveMinimum: true`` (the CRD API rejects the former).

``deploy/crds/inference.kvmesh.dev_inferenceendpointconfigs.yaml`` is the
output of ``kvmesh operator crd``; a unit test fails when it is stale.
"""

from __future__ import annotations

from typing import Any

import yaml

from kvmesh.k8s.spec import GROUP, KIND, PLURAL, VERSION, EndpointSpec

CRD_HEADER = (
    "# Generated from kvmesh.k8s.spec by `kvmesh operator crd`. Do not edit by hand.\n"
)

_CONDITION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string", "description": "Ready, Progressing or SpecValid."},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string", "description": "CamelCase machine-readable reason."},
        "message": {"type": "string", "description": "Human-readable detail."},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "minimum": 0},
    },
}

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Written by the operator.",
    "properties": {
        "conditions": {
            "type": "array",
            "items": _CONDITION_SCHEMA,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
        "replicas": {"type": "integer", "description": "Desired worker pods."},
        "readyReplicas": {"type": "integer", "description": "Worker pods passing readiness."},
        "endpointUrl": {"type": "string", "description": "In-cluster URL clients call."},
        "observedGeneration": {"type": "integer", "description": "Last reconciled generation."},
    },
}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **siblings}, defs)
    return {key: _inline(value, defs) for key, value in node.items()}


def _collapse_any_of(node: dict[str, Any]) -> dict[str, Any]:
    branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
    types = sorted(b.get("type", "") for b in branches)
    if len(branches) == 1:
        return {**branches[0], **node}
    if types == ["integer", "string"]:
        return {**node, "anyOf": branches, "x-kubernetes-int-or-string": True}
    raise ValueError(f"no structural form for anyOf {branches}")


def _clean(node: Any) -> Any:
    if isinstance(node, list):
        return [_clean(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "anyOf" in node:
        node = _collapse_any_of(node)
    node.pop("title", None)
    if node.get("default", 0) is None:
        del node["default"]
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if node.get("additionalProperties") is True and "properties" not in node:
        del node["additionalProperties"]
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "description" in node:
        node["description"] = node["description"].replace("``", "`")
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node[bound], bool):
            node[plain], node[bound] = node[bound], True
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _clean(prop) for name, prop in value.items()}
        elif key in ("items", "additionalProperties", "anyOf"):
            out[key] = _clean(value)
        else:
            out[key] = value
    return out


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON schema into a Kubernetes structural schema."""
    defs = schema.get("$defs", {})
    body = {k: v for k, v in schema.items() if k != "$defs"}
    return _clean(_inline(body, defs))  # type: ignore[no-any-return]


def spec_schema() -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``spec``."""
    return structural(EndpointSpec.model_json_schema(by_alias=True, mode="validation"))


def _version() -> dict[str, Any]:
    root = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": STATUS_SCHEMA,
        },
    }
    columns = [
        ("Model", "string", ".spec.modelName"),
        ("Replicas", "integer", ".spec.replicas"),
        ("Ready", "integer", ".status.readyReplicas"),
        ("Routing", "string", ".spec.intelligentRoutingSpec.routingStrategy"),
        ("URL", "string", ".status.endpointUrl"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    return {
        "name": VERSION,
        "served": True,
        "storage": True,
        # The scale subresource makes `kubectl scale iec/NAME --replicas N` work.
        "subresources": {
            "status": {},
            "scale": {"specReplicasPath": ".spec.replicas",
                      "statusReplicasPath": ".status.readyReplicas"},
        },
        "additionalPrinterColumns": [{"name": n, "type": t, "jsonPath": p} for n, t, p in columns],
        "schema": {"openAPIV3Schema": root},
    }


def build_crd() -> dict[str, Any]:
    """The complete CustomResourceDefinition."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["iec"],
            },
            "versions": [_version()],
        },
    }


def crd_yaml() -> str:
    """The CRD file's exact text."""
    from kvmesh.k8s.render import to_yaml  # noqa: PLC0415 (shares the alias-free dumper)

    return CRD_HEADER + to_yaml([build_crd()])
