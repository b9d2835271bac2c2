"""Each pure builder, asserted on exact structures."""

from __future__ import annotations

from typing import Any

import pytest
from k8s_testlib import with_

from kvmesh.k8s.builders.affinity import build_affinity, preference_weights
from kvmesh.k8s.builders.autoscaling import build_scaled_object
from kvmesh.k8s.builders.common import RenderOptions, metadata
from kvmesh.k8s.builders.model_source import build_model_volume
from kvmesh.k8s.builders.monitoring import build_monitor
from kvmesh.k8s.builders.rbac import build_router_rbac
from kvmesh.k8s.builders.router import build_router, router_args
from kvmesh.k8s.builders.store import build_store, store_args
from kvmesh.k8s.builders.worker import (
    build_worker_deployment,
    build_worker_service,
    worker_args,
)
from kvmesh.k8s.spec import Endpoint, parse_spec

OPTS = RenderOptions()
SEL = "kubernetes.io/service-name=ep-worker"
TYPE_KEY = "node.kubernetes.io/instance-type"
REDIS = {"enableL2Cache": True, "l2CacheSpec": {"l2CacheBackend": "redis",
                                                 "l2CacheLocalUrl": "redis://r:6379/0"}}
TIERED = {"enableL2Cache": True, "l2CacheSpec": {"l2CacheBackend": "tieredstorage"}}
TRIGGER = {"serverAddress": "http://prom:9090", "query": "sum(x)", "targetValue": 8}


def endpoint(patch: dict[str, Any] | None = None, uid: str | None = None) -> Endpoint:
    return Endpoint(name="ep", namespace="ns", spec=parse_spec(with_(patch or {})), uid=uid)


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


# --- worker flags -------------------------------------------------------------------------

def test_worker_args_l1_only() -> None:
    assert worker_args(endpoint(), OPTS, "/opt/ml/model") == [
        "--model", "/opt/ml/model", "--served-model-name", "m", "--host", "0.0.0.0",
        "--port", "8000", "--l1-size", "4GiB", "--eviction-policy", "lru", "--chunk-size", "256"]


def test_worker_args_l1_disabled_redis_and_extensions() -> None:
    ep = endpoint({"kvCacheSpec": {**REDIS, "enableL1Cache": False, "chunkSize": 512,
                                   "evictionPolicy": "lfu"},
                   "worker": {"args": ["--max-model-len", "4096"]}})
    assert worker_args(ep, OPTS, "/m") == [
        "--model", "/m", "--served-model-name", "m", "--host", "0.0.0.0", "--port", "8000",
        "--l1-size", "0", "--eviction-policy", "lfu", "--chunk-size", "512",
        "--l2-url", "redis://r:6379/0", "--l2-deadline", "100ms",
        "--", "--max-model-len", "4096"]


def test_worker_args_tieredstorage_and_kvaware() -> None:
    ep = endpoint({"kvCacheSpec": TIERED,
                   "intelligentRoutingSpec": {"enabled": True, "routingStrategy": "kvaware"}})
    assert worker_args(ep, OPTS, "/m")[12:] == [
        "--chunk-size", "256", "--l2-url", "kvmesh://$(HOST_IP):9200", "--l2-deadline", "100ms",
        "--kv-events-port", "5557"]


def test_kvaware_workers_advertise_their_event_port() -> None:
    ep = endpoint({"intelligentRoutingSpec": {"enabled": True, "routingStrategy": "kvaware"}})
    assert build_worker_service(ep, OPTS)["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"},
        {"name": "kv-events", "port": 5557, "targetPort": "kv-events", "protocol": "TCP"}]
    template = build_worker_deployment(ep, OPTS)["spec"]["template"]
    assert template["metadata"]["annotations"] == {"kvmesh.io/kv-events-port": "5557"}
    assert [p["name"] for p in build_worker_service(endpoint(), OPTS)["spec"]["ports"]] == ["http"]
    assert "annotations" not in build_worker_deployment(endpoint(), OPTS)["spec"]["template"][
        "metadata"]


def test_l2_disabled_ignores_l2_spec() -> None:
    ep = endpoint({"kvCacheSpec": {**REDIS, "enableL2Cache": False}})
    assert "--l2-url" not in worker_args(ep, OPTS, "/m")


def test_worker_pod_for_tieredstorage_shares_node_shm_and_host_ip() -> None:
    dep = build_worker_deployment(endpoint({"kvCacheSpec": TIERED}), OPTS)
    pod = dep["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "model-weights", "persistentVolumeClaim": {"claimName": "models",
                                                            "readOnly": True}},
        {"name": "kv-shm", "hostPath": {"path": "/dev/shm", "type": "Directory"}}]
    assert container(dep)["volumeMounts"] == [
        {"name": "model-weights", "mountPath": "/opt/ml/model", "readOnly": True},
        {"name": "kv-shm", "mountPath": "/dev/shm"}]
    assert container(dep)["env"] == [
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}]


def test_worker_probes_use_health_check_path() -> None:
    dep = build_worker_deployment(endpoint({"loadBalancer": {"healthCheckPath": "/ping"}}), OPTS)
    probe = {"httpGet": {"path": "/ping", "port": "http"}, "timeoutSeconds": 3}
    assert container(dep)["readinessProbe"] == {**probe, "periodSeconds": 5, "failureThreshold": 3}
    assert container(dep)["livenessProbe"] == {**probe, "periodSeconds": 10, "failureThreshold": 6}
    assert container(dep)["startupProbe"] == {**probe, "periodSeconds": 10,
                                              "failureThreshold": 180}


def test_worker_replicas_left_to_keda_when_autoscaled() -> None:
    assert build_worker_deployment(endpoint({"replicas": 3}), OPTS)["spec"]["replicas"] == 3
    scaled = endpoint({"intelligentRoutingSpec": {"autoScalingSpec": {
        "prometheusTrigger": TRIGGER}}})
    assert "replicas" not in build_worker_deployment(scaled, OPTS)["spec"]


def test_owner_reference_only_with_uid() -> None:
    assert "ownerReferences" not in metadata(endpoint(), "x", "worker")
    assert metadata(endpoint(uid="u-1"), "x", "worker")["ownerReferences"] == [{
        "apiVersion": "inference.kvmesh.dev/v1alpha1", "kind": "InferenceEndpointConfig",
        "name": "ep", "uid": "u-1", "controller": True, "blockOwnerDeletion": True}]


# --- model sources ----------------------------------------------------------------------------

def test_s3_source_downloads_in_init_container() -> None:
    vol = build_model_volume(endpoint({"modelSourceConfig": {
        "modelSourceType": "s3", "pvcStorage": None, "modelLocation": "models/m",
        "s3Storage": {"bucketName": "bkt", "region": "us-west-2"}}}), OPTS)
    assert vol.volumes == [{"name": "model-weights", "emptyDir": {}}]
    assert vol.model_dir == "/opt/ml/model"
    assert vol.init_containers == [{
        "name": "model-download", "image": "amazon/aws-cli:2.17.0",
        "imagePullPolicy": "IfNotPresent",
        "command": ["aws", "s3", "sync", "s3://bkt/models/m", "/opt/ml/model",
                    "--only-show-errors"],
        "volumeMounts": [{"name": "model-weights", "mountPath": "/opt/ml/model",
                          "readOnly": False}],
        "env": [{"name": "AWS_REGION", "value": "us-west-2"}]}]


def test_huggingface_source_uses_worker_image_and_token_secret() -> None:
    vol = build_model_volume(endpoint({"modelSourceConfig": {
        "modelSourceType": "huggingface", "pvcStorage": None,
        "huggingFaceStorage": {"modelId": "org/m", "tokenSecretName": "hf"}}}), OPTS)
    init = vol.init_containers[0]
    assert (init["image"], init["command"][0], init["command"][3:]) == (
        "img:1", "python3", ["org/m", "main", "/opt/ml/model"])
    assert init["env"] == [{"name": "HF_TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]


def test_pvc_prefetch_copies_into_empty_dir() -> None:
    vol = build_model_volume(endpoint({"modelSourceConfig": {
        "prefetchEnabled": True, "modelLocation": "m1"}}), OPTS)
    assert vol.volumes == [
        {"name": "model-weights", "emptyDir": {}},
        {"name": "model-source", "persistentVolumeClaim": {"claimName": "models",
                                                           "readOnly": True}}]
    assert vol.init_containers[0]["command"] == ["cp", "-a", "/model-source/m1/.", "/opt/ml/model"]
    assert vol.model_dir == "/opt/ml/model"


def test_host_path_source_mounts_read_only() -> None:
    vol = build_model_volume(endpoint({"modelSourceConfig": {
        "modelSourceType": "hostPath", "pvcStorage": None, "modelLocation": "llama",
        "hostPathStorage": {"path": "/mnt/models"}}}), OPTS)
    assert vol.volumes == [{"name": "model-weights",
                            "hostPath": {"path": "/mnt/models", "type": "Directory"}}]
    assert (vol.mount["readOnly"], vol.model_dir, vol.init_containers) == (
        True, "/opt/ml/model/llama", [])


# --- affinity ------------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "weights"), [
    (1, [100]), (2, [100, 50]), (3, [100, 67, 34]), (4, [100, 75, 50, 25])])
def test_preference_weights_descend(count: int, weights: list[int]) -> None:
    assert preference_weights(count) == weights


def test_instance_types_compile_to_required_in_plus_descending_preferences() -> None:
    assert build_affinity(endpoint({"instanceTypes": ["p5", "p4d"]})) == {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": TYPE_KEY, "operator": "In", "values": ["p5", "p4d"]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": TYPE_KEY, "operator": "In", "values": ["p5"]}]}},
            {"weight": 50, "preference": {"matchExpressions": [
                {"key": TYPE_KEY, "operator": "In", "values": ["p4d"]}]}}]}}


def test_raw_node_affinity_is_merged_into_every_required_term() -> None:
    zone = {"key": "zone", "operator": "In", "values": ["a"]}
    gpu = {"key": "gpu", "operator": "Exists"}
    pref = {"weight": 5, "preference": {"matchExpressions": [gpu]}}
    raw = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [zone]}, {"matchExpressions": [gpu]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [pref]}
    types = {"key": TYPE_KEY, "operator": "In", "values": ["g5"]}
    assert build_affinity(endpoint({"instanceType": "g5", "nodeAffinity": raw})) == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [zone, types]}, {"matchExpressions": [gpu, types]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [pref]}}
    assert build_affinity(endpoint({"nodeAffinity": raw})) == {"nodeAffinity": raw}
    assert build_affinity(endpoint()) is None


# --- router, rbac, store --------------------------------------------------------------------------

def test_router_off_renders_nothing() -> None:
    assert build_router(endpoint(), OPTS) == []


@pytest.mark.parametrize(("routing", "extra"), [
    ({"routingStrategy": "prefixaware"}, []),
    ({"routingStrategy": "roundrobin"}, []),
    ({"routingStrategy": "session", "sessionKey": "x-user"}, ["--session-key", "x-user"]),
    ({"routingStrategy": "kvaware"}, ["--model-dir", "/opt/ml/model", "--model-id", "m"]),
])
def test_router_args_per_strategy(routing: dict[str, Any], extra: list[str]) -> None:
    ep = endpoint({"intelligentRoutingSpec": {"enabled": True, **routing}})
    dep = build_router(ep, OPTS)[3]
    assert container(dep)["args"] == [
        "--k8s-namespace", "ns", "--k8s-selector", SEL, "--k8s-port", "8000",
        "--routing-strategy", routing["routingStrategy"], "--chunk-size", "256",
        "--host", "0.0.0.0", "--port", "8000", *extra]
    assert router_args(ep, OPTS, "/opt/ml/model" if extra[:1] == ["--model-dir"] else None) == (
        container(dep)["args"])
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "ep-router"


def test_router_rbac_reads_only_discovery_objects_in_its_namespace() -> None:
    account, role, binding = build_router_rbac(endpoint(), OPTS)
    assert (account["kind"], role["kind"], binding["kind"]) == (
        "ServiceAccount", "Role", "RoleBinding")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "endpoints"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
         "verbs": ["get", "list", "watch"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ep-router",
                                    "namespace": "ns"}]


def test_store_only_for_tieredstorage() -> None:
    assert build_store(endpoint({"kvCacheSpec": REDIS}), OPTS) == []
    ep = endpoint({"kvCacheSpec": {**TIERED, "l2CacheSpec": {
        "l2CacheBackend": "tieredstorage", "tieredStorage": {"memorySize": "16GiB", "port": 9300,
                                                             "metricsPort": 9301}}},
                   "instanceType": "g5"})
    daemonset, service = build_store(ep, OPTS)
    assert store_args(ep) == ["--host", "0.0.0.0", "--port", "9300", "--memory-size", "16GiB",
                              "--metrics-port", "9301"]
    assert container(daemonset)["ports"] == [
        {"name": "store", "containerPort": 9300, "hostPort": 9300, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9301, "protocol": "TCP"}]
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["affinity"] == build_affinity(ep)
    assert pod["volumes"] == [{"name": "kv-shm",
                               "hostPath": {"path": "/dev/shm", "type": "Directory"}}]
    assert (service["spec"]["clusterIP"], [p["port"] for p in service["spec"]["ports"]]) == (
        "None", [9300, 9301])


# --- autoscaling, monitoring -------------------------------------------------------------------

def test_scaled_object_from_autoscaling_spec() -> None:
    assert build_scaled_object(endpoint(), OPTS) == []
    ep = endpoint({"intelligentRoutingSpec": {"autoScalingSpec": {
        "minReplicaCount": 0, "maxReplicaCount": 6, "scaleDownStabilizationTime": 120,
        "prometheusTrigger": {**TRIGGER, "targetValue": 2.5, "name": "inflight"}}}})
    [scaled] = build_scaled_object(ep, OPTS)
    assert scaled["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ep-worker"},
        "minReplicaCount": 0, "maxReplicaCount": 6, "pollingInterval": 30,
        "cooldownPeriod": 300, "initialCooldownPeriod": 0,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
            "scaleUp": {"stabilizationWindowSeconds": 0},
            "scaleDown": {"stabilizationWindowSeconds": 120}}}},
        "triggers": [{"type": "prometheus", "metricType": "AverageValue", "name": "inflight",
                      "metadata": {"serverAddress": "http://prom:9090", "query": "sum(x)",
                                   "threshold": "2.5", "activationThreshold": "0"}}]}


def test_monitor_scrapes_every_component_port() -> None:
    assert build_monitor(endpoint(), OPTS) == []
    ep = endpoint({"metrics": {"enabled": True}, "kvCacheSpec": TIERED,
                   "intelligentRoutingSpec": {"enabled": True},
                   "worker": {"modelInvocationPort": {"name": "api"}}})
    [monitor] = build_monitor(ep, OPTS)
    assert (monitor["kind"], monitor["metadata"]["name"]) == ("PodMonitor", "ep")
    assert monitor["spec"] == {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "kvmesh",
                                     "app.kubernetes.io/instance": "ep"}},
        "podMetricsEndpoints": [
            {"port": "api", "path": "/metrics", "interval": "30s"},
            {"port": "http", "path": "/metrics", "interval": "30s"},
            {"port": "metrics", "path": "/metrics", "interval": "30s"}]}
    service_monitor = endpoint({"metrics": {"enabled": True, "monitorKind": "ServiceMonitor"}})
    [monitor] = build_monitor(service_monitor, OPTS)
    assert (monitor["kind"], monitor["spec"]["endpoints"]) == (
        "ServiceMonitor", [{"port": "http", "path": "/metrics", "interval": "30s"}])


def test_render_options_validate() -> None:
    with pytest.raises(ValueError, match="image_pull_policy"):
        RenderOptions(image_pull_policy="Sometimes")
    with pytest.raises(ValueError, match="router_port"):
        RenderOptions(router_port=0)
