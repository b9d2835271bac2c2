"""The pydantic models: HyperPod defaults, extensions, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from k8s_testlib import MINIMAL, with_

from kvmesh.k8s.spec import (
    API_VERSION,
    KIND,
    EndpointSpec,
    InvalidSpecError,
    parse_endpoint,
    parse_spec,
)

def test_minimal_spec_gets_hyperpod_defaults() -> None:
    spec = parse_spec(MINIMAL)
    dumped = spec.model_dump(by_alias=True, exclude_none=True)
    assert dumped["kvCacheSpec"] == {
        "enableL1Cache": True, "enableL2Cache": False, "l1CacheSize": "4GiB",
        "evictionPolicy": "lru", "chunkSize": 256,
    }
    assert dumped["intelligentRoutingSpec"] == {
        "enabled": False, "routingStrategy": "prefixaware", "routerReplicas": 1,
        "sessionKey": "x-session-id",
    }
    assert dumped["worker"] == {
        "image": "img:1", "args": [], "resources": {"limits": {}, "requests": {}},
        "modelInvocationPort": {"containerPort": 8000, "name": "http"},
        "modelVolumeMount": {"name": "model-weights", "mountPath": "/opt/ml/model"},
        "environmentVariables": [],
    }
    assert (dumped["replicas"], dumped["invocationEndpoint"]) == (1, "v1/chat/completions")
    assert dumped["loadBalancer"] == {"healthCheckPath": "/health"}
    assert dumped["metrics"] == {"enabled": False, "modelMetrics": {"path": "/metrics"},
                                 "monitorKind": "PodMonitor", "scrapeInterval": "30s"}


@pytest.mark.parametrize("backend", ["redis", "REDIS", "Redis"])
def test_l2_backend_is_case_insensitive(backend: str) -> None:
    spec = parse_spec(with_({"kvCacheSpec": {"enableL2Cache": True, "l2CacheSpec": {
        "l2CacheBackend": backend, "l2CacheLocalUrl": "redis://r:6379/0"}}}))
    assert spec.kv_cache_spec.l2_cache_spec is not None
    assert spec.kv_cache_spec.l2_cache_spec.l2_cache_backend == "redis"


def test_snake_case_names_are_accepted_too() -> None:
    spec = EndpointSpec.model_validate(with_({"kvCacheSpec": {"chunk_size": 512}}))
    assert spec.kv_cache_spec.chunk_size == 512


INVALID: list[tuple[dict[str, Any], list[str]]] = [
    ({"kvCacheSpec": {"enableL2Cache": True, "l2CacheSpec": {"l2CacheBackend": "memcached"}}},
     ["spec.kvCacheSpec.l2CacheSpec.l2CacheBackend: Input should be 'redis' or 'tieredstorage'"]),
    ({"kvCacheSpec": {"enableL2Cache": True}},
     ["spec.kvCacheSpec: l2CacheSpec is required when enableL2Cache is true"]),
    ({"kvCacheSpec": {"enableL2Cache": True, "l2CacheSpec": {"l2CacheBackend": "redis"}}},
     ["spec.kvCacheSpec.l2CacheSpec: l2CacheLocalUrl is required when l2CacheBackend is redis"]),
    ({"kvCacheSpec": {"l2CacheSpec": {"l2CacheBackend": "tieredstorage",
                                      "l2CacheLocalUrl": "redis://x:1"}}},
     ["spec.kvCacheSpec.l2CacheSpec: l2CacheLocalUrl must be empty when l2CacheBackend is "
      "tieredstorage (workers reach the store on their node)"]),
    ({"kvCacheSpec": {"l2CacheSpec": {"l2CacheBackend": "redis",
                                      "l2CacheLocalUrl": "http://x:1"}}},
     ["spec.kvCacheSpec.l2CacheSpec.l2CacheLocalUrl: String should match pattern "
      "'^rediss?://[^\\s]+$'"]),
    ({"kvCacheSpec": {"l2CacheSpec": {"l2CacheBackend": "redis", "l2CacheLocalUrl": "redis://x",
                                      "l2Deadline": "30s"}}},
     ["spec.kvCacheSpec.l2CacheSpec: l2Deadline 30s exceeds 10s; recompute is faster"]),
    ({"kvCacheSpec": {"chunkSize": 100}},
     ["spec.kvCacheSpec.chunkSize: Input should be a multiple of 16"]),
    ({"kvCacheSpec": {"l1CacheSize": "4Gi"}},
     ["spec.kvCacheSpec.l1CacheSize: String should match pattern "
      "'^[0-9]+(\\.[0-9]+)?([KMGT](iB|B)?|B)?$'"]),
    ({"kvCacheSpec": {"l1CacheSize": "0"}},
     ["spec.kvCacheSpec: l1CacheSize is 0; set enableL1Cache: false to disable L1"]),
    ({"kvCacheSpec": {"evictionPolicy": "random"}},
     ["spec.kvCacheSpec.evictionPolicy: Input should be 'lru', 'lfu' or 'fifo'"]),
    ({"intelligentRoutingSpec": {"routingStrategy": "random"}},
     ["spec.intelligentRoutingSpec.routingStrategy: Input should be 'prefixaware', 'kvaware', "
      "'session' or 'roundrobin'"]),
    ({"intelligentRoutingSpec": {"autoScalingSpec": {
        "minReplicaCount": 5, "maxReplicaCount": 2,
        "prometheusTrigger": {"serverAddress": "http://p:9090", "query": "q", "targetValue": 1}}}},
     ["spec.intelligentRoutingSpec.autoScalingSpec: minReplicaCount must be <= maxReplicaCount"]),
    ({"instanceType": "a", "instanceTypes": ["b"]},
     ["spec: set instanceType or instanceTypes, not both"]),
    ({"instanceTypes": ["a", "a"]},
     ["spec.instanceTypes: instance types must be unique"]),
    ({"modelSourceConfig": {"modelSourceType": "s3"}},
     ["spec.modelSourceConfig: s3Storage is required when modelSourceType is s3"]),
    ({"modelSourceConfig": {"modelSourceType": "hostPath", "hostPathStorage": {"path": "/m"}}},
     ["spec.modelSourceConfig: pvcStorage is not allowed when modelSourceType is hostPath"]),
    ({"worker": {"environmentVariables": [{"name": "A", "value": "1"}, {"name": "1B"}]}},
     ["spec.worker.environmentVariables[1].name: String should match pattern "
      "'^[-._a-zA-Z][-._a-zA-Z0-9]*$'"]),
    ({"metrics": {"modelMetrics": {"port": 9000}}},
     ["spec: metrics.modelMetrics.port must equal worker.modelInvocationPort.containerPort "
      "(kvmesh workers serve /metrics on their serving port)"]),
    ({"kvCacheSpec": {"cacheConfigFile": "/etc/lmcache.yaml"}, "replicas": -1},
     ["spec.replicas: Input should be greater than or equal to 0",
      "spec.kvCacheSpec.cacheConfigFile: Extra inputs are not permitted"]),
]


@pytest.mark.parametrize(("patch", "messages"), INVALID)
def test_invalid_specs_name_the_field(patch: dict[str, Any], messages: list[str]) -> None:
    with pytest.raises(InvalidSpecError) as exc:
        parse_spec(with_(patch))
    assert exc.value.messages == messages
    assert str(exc.value) == "; ".join(messages)


def test_missing_required_fields_are_listed() -> None:
    with pytest.raises(InvalidSpecError) as exc:
        parse_spec({})
    assert exc.value.messages == [
        "spec.modelName: Field required",
        "spec.modelSourceConfig: Field required",
        "spec.worker: Field required",
    ]


def test_parse_endpoint_checks_identity_and_collects_all_errors() -> None:
    body = {"apiVersion": "inference.kvmesh.dev/v1", "kind": KIND,
            "metadata": {"name": "Bad_Name"}, "spec": with_({"replicas": "many"})}
    with pytest.raises(InvalidSpecError) as exc:
        parse_endpoint(body)
    assert exc.value.messages == [
        "apiVersion: must be inference.kvmesh.dev/v1alpha1, got 'inference.kvmesh.dev/v1'",
        "metadata.name: 'Bad_Name' must be a DNS label of at most 45 characters",
        "spec.replicas: Input should be a valid integer, unable to parse string as an integer",
    ]


def test_parse_endpoint_identity() -> None:
    body = {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "ep", "uid": "u-1", "generation": 3}, "spec": MINIMAL}
    endpoint = parse_endpoint(body)
    assert (endpoint.name, endpoint.namespace, endpoint.uid, endpoint.generation) == (
        "ep", "default", "u-1", 3)
    assert endpoint.spec == parse_spec(MINIMAL)


def test_instance_type_priority() -> None:
    assert parse_spec(MINIMAL).instance_type_priority == []
    assert parse_spec(with_({"instanceType": "g5"})).instance_type_priority == ["g5"]
    assert parse_spec(with_({"instanceTypes": ["p5", "g5"]})).instance_type_priority == [
        "p5", "g5"]
