"""kopf handlers called with kopf's keyword arguments against an in-memory API."""

from __future__ import annotations

import copy
import logging
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from k8s_testlib import CORE_KINDS, FakeClusterApi, load_sample

from kvmesh.common.errors import BackendUnavailableError
from kvmesh.k8s.builders.common import RenderOptions
from kvmesh.k8s.handlers import OperatorContext, reconcile, refresh_status, register_handlers
from kvmesh.k8s.render import render_documents
from kvmesh.k8s.spec import InvalidSpecError
from kvmesh.k8s.status import Condition, set_condition

LOG = logging.getLogger("test")
ROUTER_KINDS = [("Deployment", "qwen-l1-router"), ("Role", "qwen-l1-router"),
                ("RoleBinding", "qwen-l1-router"), ("Service", "qwen-l1-router"),
                ("ServiceAccount", "qwen-l1-router")]
WORKER_KINDS = [("Deployment", "qwen-l1-worker"), ("Service", "qwen-l1-worker")]


class Clock:
    """Deterministic timestamps: one second later on every call."""

    def __init__(self) -> None:
        self.tick = 0

    def __call__(self) -> str:
        self.tick += 1
        return f"2026-01-01T00:00:{self.tick:02d}Z"


def resource(name: str = "l1-only", generation: int = 1) -> dict[str, Any]:
    body = load_sample(name)
    body["metadata"].update(uid=f"uid-{body['metadata']['name']}", generation=generation)
    return body


def memo(api: FakeClusterApi) -> SimpleNamespace:
    return SimpleNamespace(ctx=OperatorContext(api=api, options=RenderOptions(), now=Clock()))


def call(handler: Any, body: dict[str, Any], m: SimpleNamespace) -> dict[str, Any]:
    """Invoke as kopf does, then merge the status patch into ``body`` as kopf would."""
    patch: dict[str, Any] = kopf.Patch()
    try:
        handler(body=body, spec=body["spec"], meta=body["metadata"], status=body.get("status", {}),
                name=body["metadata"]["name"], namespace=body["metadata"]["namespace"],
                patch=patch, memo=m, logger=LOG, retry=0, reason="create")
    finally:
        if "status" in patch:
            body["status"] = {**body.get("status", {}), **patch["status"]}
    return dict(patch)


def conditions(body: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in body["status"]["conditions"]}


def test_create_applies_every_rendered_child_and_reports(fake_api: FakeClusterApi) -> None:
    body, m = resource(), memo(fake_api)
    call(reconcile, body, m)
    expected = render_documents([body], RenderOptions())
    assert [fake_api.get(e["apiVersion"], e["kind"], "default", e["metadata"]["name"])
            for e in expected] == expected
    assert fake_api.names() == WORKER_KINDS
    assert fake_api.events == [("Normal", "Reconciled", "applied 2 objects, pruned 0")]
    status = body["status"]
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "replicas": 2, "readyReplicas": 0, "observedGeneration": 1,
        "endpointUrl": "http://qwen-l1-worker.default.svc.cluster.local:8000/v1/chat/completions"}
    assert status["conditions"] == [
        {"type": "Progressing", "status": "True", "reason": "RollingOut",
         "message": "0/2 workers ready", "lastTransitionTime": "2026-01-01T00:00:03Z",
         "observedGeneration": 1},
        {"type": "Ready", "status": "False", "reason": "WaitingForWorkers",
         "message": "0/2 workers ready", "lastTransitionTime": "2026-01-01T00:00:02Z",
         "observedGeneration": 1},
        {"type": "SpecValid", "status": "True", "reason": "Valid", "message": "",
         "lastTransitionTime": "2026-01-01T00:00:01Z", "observedGeneration": 1},
    ]


def test_routing_can_be_turned_on_and_off_for_an_existing_endpoint(
        fake_api: FakeClusterApi) -> None:
    body, m = resource(), memo(fake_api)
    call(reconcile, body, m)
    worker_before = fake_api.get("apps/v1", "Deployment", "default", "qwen-l1-worker")

    body["spec"]["intelligentRoutingSpec"] = {"enabled": True, "routingStrategy": "kvaware"}
    body["metadata"]["generation"] = 2
    call(reconcile, body, m)
    assert fake_api.names() == sorted(WORKER_KINDS + ROUTER_KINDS)
    assert body["status"]["endpointUrl"] == (
        "http://qwen-l1-router.default.svc.cluster.local:8000/v1/chat/completions")
    worker_after = fake_api.get("apps/v1", "Deployment", "default", "qwen-l1-worker")
    assert worker_after != worker_before  # kvaware: workers now publish KV events
    assert "--kv-events-port" in worker_after["spec"]["template"]["spec"]["containers"][0]["args"]

    body["spec"]["intelligentRoutingSpec"] = {"enabled": False}
    call(reconcile, body, m)
    assert fake_api.names() == WORKER_KINDS
    assert fake_api.events[-1] == (
        "Normal", "Reconciled",
        "applied 2 objects, pruned 5: ServiceAccount/qwen-l1-router, Role/qwen-l1-router, "
        "RoleBinding/qwen-l1-router, Deployment/qwen-l1-router, Service/qwen-l1-router")


def test_switching_l2_from_tieredstorage_to_redis_prunes_the_store(
        fake_api: FakeClusterApi) -> None:
    body, m = resource("l1-l2-tieredstorage"), memo(fake_api)
    call(reconcile, body, m)
    assert ("DaemonSet", "llama-tiered-store") in fake_api.names()
    body["spec"]["kvCacheSpec"]["l2CacheSpec"] = {"l2CacheBackend": "redis",
                                                  "l2CacheLocalUrl": "redis://r:6379/0"}
    call(reconcile, body, m)
    assert [n for n in fake_api.names() if n[1].endswith("-store")] == []
    assert "Service/llama-tiered-store" in fake_api.events[-1][2]


def test_prune_leaves_other_endpoints_alone(fake_api: FakeClusterApi) -> None:
    m = memo(fake_api)
    first, second = resource(), resource()
    second["metadata"]["name"] = "other"
    call(reconcile, first, m)
    call(reconcile, second, m)
    assert fake_api.names() == sorted(WORKER_KINDS + [("Deployment", "other-worker"),
                                                      ("Service", "other-worker")])


def test_invalid_spec_is_reported_and_nothing_is_applied(fake_api: FakeClusterApi) -> None:
    body, m = resource(), memo(fake_api)
    body["spec"]["kvCacheSpec"]["l2CacheSpec"] = {"l2CacheBackend": "memcached"}
    with pytest.raises(InvalidSpecError):
        call(reconcile, body, m)
    message = ("spec.kvCacheSpec.l2CacheSpec.l2CacheBackend: Input should be 'redis' or "
               "'tieredstorage'")
    assert fake_api.objects == {}
    assert fake_api.events == [("Warning", "InvalidSpec", message)]
    assert conditions(body) == {"SpecValid": ("False", "InvalidSpec"),
                                "Ready": ("False", "InvalidSpec")}
    assert body["status"]["conditions"][1]["message"] == message


def test_missing_keda_is_a_retryable_apply_failure() -> None:
    api = FakeClusterApi(installed=set(CORE_KINDS))
    body, m = resource("routing-kvaware"), memo(api)
    with pytest.raises(BackendUnavailableError):
        call(reconcile, body, m)
    assert api.events == [("Warning", "ApplyFailed",
                           "ScaledObject (keda.sh/v1alpha1) is not installed in the cluster")]
    assert conditions(body)["Ready"] == ("False", "ApplyFailed")


def test_tls_config_is_flagged_as_not_implemented(fake_api: FakeClusterApi) -> None:
    body = resource()
    body["spec"]["tlsConfig"] = {"tlsCertificateOutputS3Uri": "s3://b/certs"}
    call(reconcile, body, memo(fake_api))
    assert [e[1] for e in fake_api.events] == ["Reconciled", "TLSNotImplemented"]


def test_status_timer_tracks_readiness_and_announces_flips(fake_api: FakeClusterApi) -> None:
    body, m = resource("routing-session"), memo(fake_api)
    call(reconcile, body, m)
    assert conditions(body)["Ready"] == ("False", "WaitingForRouter")
    assert call(refresh_status, body, m) == {}  # nothing changed, nothing patched

    fake_api.set_ready("default", "chat-session-worker", 2)
    fake_api.set_ready("default", "chat-session-router", 1)
    patch = call(refresh_status, body, m)
    assert patch["status"]["readyReplicas"] == 2
    assert conditions(body) == {"Ready": ("True", "Serving"), "Progressing": ("False", "Complete"),
                                "SpecValid": ("True", "Valid")}
    assert fake_api.events[-1] == ("Normal", "Ready", "2/2 workers ready")

    fake_api.set_ready("default", "chat-session-worker", 0)
    call(refresh_status, body, m)
    assert conditions(body)["Ready"] == ("False", "WaitingForWorkers")
    assert fake_api.events[-1] == ("Warning", "NotReady", "0/2 workers ready")


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    first = set_condition([], Condition("Ready", "False", "A", "x"), "t1", 1)
    same = set_condition(first, Condition("Ready", "False", "B", "y"), "t2", 2)
    flipped = set_condition(same, Condition("Ready", "True", "C"), "t3", 2)
    assert [c["lastTransitionTime"] for c in (first[0], same[0], flipped[0])] == ["t1", "t1", "t3"]
    assert same[0] == {"type": "Ready", "status": "False", "reason": "B", "message": "y",
                       "lastTransitionTime": "t1", "observedGeneration": 2}


def test_register_handlers_maps_errors_to_kopf_retry_policy(fake_api: FakeClusterApi) -> None:
    registry = kopf.OperatorRegistry()
    register_handlers(registry)
    changing = registry._changing.get_all_handlers()
    assert sorted((str(h.reason), h.initial) for h in changing) == [
        ("None", True), ("create", None), ("update", None)]  # resume: reason None, initial
    assert [h.id for h in registry._spawning.get_all_handlers()] == ["status"]
    assert [h.id for h in registry._activities.get_all_handlers()] == ["login"]
    handler = changing[0].fn
    body = resource()
    body["spec"]["replicas"] = -1
    with pytest.raises(kopf.PermanentError, match="spec.replicas"):
        call(handler, copy.deepcopy(body), memo(fake_api))
    with pytest.raises(kopf.TemporaryError, match="not installed"):
        call(handler, resource("routing-kvaware"), memo(FakeClusterApi(installed=set(CORE_KINDS))))
