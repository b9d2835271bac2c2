"""The CRD agrees with the pydantic models: same file, same defaults, same rejections."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from k8s_testlib import REPO, SAMPLES

from kvmesh.k8s.crd import build_crd, crd_yaml
from kvmesh.k8s.spec import InvalidSpecError, parse_endpoint, parse_spec

CRD_PATH = REPO / "deploy" / "crds" / "inference.kvmesh.dev_inferenceendpointconfigs.yaml"
HELM_CRD_PATH = (REPO / "deploy" / "helm" / "kvmesh-operator" / "files"
                 / "inference.kvmesh.dev_inferenceendpointconfigs.yaml")


def crd_root_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def strict(schema: Any) -> Any:
    """The CRD schema as a JSON Schema 2020 validator reads it, plus what `kubectl apply`
    (strict field validation) enforces: no unknown fields."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(bound) is True:  # OpenAPI 3.0 boolean form -> 2020 numeric form
            out[bound] = out.pop(plain)
    return out


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """API-server defaulting: fill missing properties that have a default, recursively."""
    if not isinstance(value, dict) or "properties" not in schema:
        if isinstance(value, list) and "items" in schema:
            return [apply_defaults(schema["items"], item) for item in value]
        return value
    out = dict(value)
    for name, prop in schema["properties"].items():
        if name not in out and "default" in prop:
            out[name] = copy.deepcopy(prop["default"])
        if name in out:
            out[name] = apply_defaults(prop, out[name])
    return out


@pytest.mark.parametrize("path", [CRD_PATH, HELM_CRD_PATH], ids=["deploy", "helm"])
def test_checked_in_crd_is_generated_from_models(path: Path) -> None:
    assert path.read_text() == crd_yaml(), "stale CRD: run `kvmesh operator crd > <path>`"


def test_crd_validates_against_the_official_crd_schema() -> None:
    kubernetes_validate.validate(yaml.safe_load(CRD_PATH.read_text()), "1.30.0", strict=True)


def test_crd_is_structural() -> None:
    """Every node has a type (or int-or-string / preserve-unknown); no $ref or nullable anyOf."""
    def walk(node: dict[str, Any], path: str) -> None:
        assert "$ref" not in node and "title" not in node, path
        if not node.get("x-kubernetes-int-or-string"):
            assert "type" in node, path
            assert "anyOf" not in node, path
        for name, prop in node.get("properties", {}).items():
            walk(prop, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{path}.{key}")

    walk(crd_root_schema(), "")


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_samples_validate_against_crd_and_models(sample: Path) -> None:
    body = yaml.safe_load(sample.read_text())
    jsonschema.validate(body, strict(crd_root_schema()))
    parse_endpoint(body)  # raises InvalidSpecError on any disagreement


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_crd_defaults_equal_model_defaults(sample: Path) -> None:
    spec = yaml.safe_load(sample.read_text())["spec"]
    defaulted = apply_defaults(crd_root_schema()["properties"]["spec"], spec)
    model = parse_spec(spec)
    l2 = defaulted["kvCacheSpec"].get("l2CacheSpec")
    if l2:  # the one normalisation the model makes: the backend is case-insensitive
        l2["l2CacheBackend"] = l2["l2CacheBackend"].lower()
    assert defaulted == model.model_dump(by_alias=True, exclude_none=True)
    assert parse_spec(defaulted) == model


def test_enums_match_model_literals() -> None:
    spec = crd_root_schema()["properties"]["spec"]["properties"]
    routing = spec["intelligentRoutingSpec"]["properties"]
    kv = spec["kvCacheSpec"]["properties"]
    assert routing["routingStrategy"]["enum"] == ["prefixaware", "kvaware", "session", "roundrobin"]
    assert kv["evictionPolicy"]["enum"] == ["lru", "lfu", "fifo"]
    assert kv["l2CacheSpec"]["properties"]["l2CacheBackend"]["pattern"] == (
        "^(?i:redis|tieredstorage)$")
    assert spec["modelSourceConfig"]["properties"]["modelSourceType"]["enum"] == [
        "s3", "pvc", "hostPath", "huggingface"]


BASE = yaml.safe_load((REPO / "deploy" / "samples" / "routing-kvaware.yaml").read_text())

REJECTED_BY_BOTH: list[tuple[str, Any]] = [
    ("intelligentRoutingSpec.routingStrategy", "random"),
    ("kvCacheSpec.l2CacheSpec.l2CacheBackend", "memcached"),
    ("kvCacheSpec.l2CacheSpec.l2CacheLocalUrl", "http://redis:6379"),
    ("kvCacheSpec.l2CacheSpec.l2Deadline", "100"),
    ("kvCacheSpec.chunkSize", 100),
    ("kvCacheSpec.chunkSize", 0),
    ("kvCacheSpec.l1CacheSize", "4Gi"),
    ("kvCacheSpec.evictionPolicy", "LRU"),
    ("kvCacheSpec.cacheConfigFile", "/etc/x.yaml"),
    ("replicas", -1),
    ("worker.modelInvocationPort.containerPort", 70000),
    ("loadBalancer.healthCheckPath", "health"),
    ("modelSourceConfig.modelSourceType", "fsx"),
    ("metrics.scrapeInterval", "30"),
    ("intelligentRoutingSpec.autoScalingSpec.prometheusTrigger.targetValue", 0),
]


@pytest.mark.parametrize(("path", "value"), REJECTED_BY_BOTH, ids=[p for p, _ in REJECTED_BY_BOTH])
def test_crd_and_models_reject_the_same_values(path: str, value: Any) -> None:
    body = copy.deepcopy(BASE)
    node = body["spec"]
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    with pytest.raises(jsonschema.ValidationError) as schema_exc:
        jsonschema.validate(body, strict(crd_root_schema()))
    with pytest.raises(InvalidSpecError) as model_exc:
        parse_endpoint(body)
    assert list(schema_exc.value.absolute_path)[1:] in (path.split("."), path.split(".")[:-1])
    assert any(m.startswith(f"spec.{path}") or m.startswith(f"spec.{path.rsplit('.', 1)[0]}:")
               for m in model_exc.value.messages), model_exc.value.messages


def test_crd_metadata() -> None:
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    assert crd["metadata"]["name"] == "inferenceendpointconfigs.inference.kvmesh.dev"
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}, "scale": {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.readyReplicas"}}
    assert crd["spec"]["names"]["shortNames"] == ["iec"]
