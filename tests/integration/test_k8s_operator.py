"""`kvmesh operator run` (real kopf, real Kubernetes client) against a fake API server.

The operator runs as a child process with a kubeconfig pointing at the fake
server on loopback; the test creates, updates and breaks a resource and polls
the fake cluster for the children, status and events the operator writes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_fake_apiserver import ClusterState, fake_apiserver

from kvmesh.common.procs import ManagedProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
CR = ("inference.kvmesh.dev/v1alpha1", "inferenceendpointconfigs")
TIMEOUT_S = 60.0


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {"token": "test-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }))
    return path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ClusterState, ManagedProcess]]:
    with fake_apiserver() as (url, state):
        kubeconfig = _kubeconfig(tmp_path / "kubeconfig", url)
        operator = ManagedProcess(
            [sys.executable, "-m", "kvmesh", "operator", "run", "--namespace", "default",
             "--health-port", "0"],
            "kvmesh-operator", env={"KUBECONFIG": str(kubeconfig), "TMPDIR": str(tmp_path)},
            log_path=tmp_path / "operator.log").start()
        try:
            yield state, operator
        finally:
            operator.stop()


def _names(state: ClusterState, gv: str, plural: str) -> list[str]:
    return [o["metadata"]["name"] for o in state.find(gv, plural, "default")]


def _wait(operator: ManagedProcess, predicate: Any, what: str) -> None:
    try:
        wait_until(predicate, TIMEOUT_S, what, alive=operator.alive)
    except (TimeoutError, RuntimeError) as exc:
        raise AssertionError(f"{exc}\n--- operator log ---\n{operator.log_tail()}") from None


def _cr(state: ClusterState, name: str) -> dict[str, Any]:
    return next(o for o in state.find(*CR, "default") if o["metadata"]["name"] == name)


def _event_reasons(state: ClusterState) -> list[str]:
    return [e.get("reason", "") for e in state.find("v1", "events", "default")]


def test_operator_reconciles_create_update_and_invalid_specs(
        cluster: tuple[ClusterState, ManagedProcess]) -> None:
    state, operator = cluster
    body = yaml.safe_load((REPO / "deploy" / "samples" / "l1-only.yaml").read_text())
    uid = state.put(*CR, body)["metadata"]["uid"]

    _wait(operator, lambda: "qwen-l1-worker" in _names(state, "apps/v1", "deployments"),
          "worker Deployment applied")
    worker = state.find("apps/v1", "deployments", "default")[0]
    assert [r["uid"] for r in worker["metadata"]["ownerReferences"]] == [uid]
    # Children are applied one after another: poll for the Service too.
    _wait(operator, lambda: _names(state, "v1", "services") == ["qwen-l1-worker"],
          "worker Service applied")
    _wait(operator, lambda: "endpointUrl" in _cr(state, "qwen-l1").get("status", {}),
          "status written")
    status = _cr(state, "qwen-l1")["status"]
    assert status["endpointUrl"] == (
        "http://qwen-l1-worker.default.svc.cluster.local:8000/v1/chat/completions")
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "SpecValid": "True", "Ready": "False", "Progressing": "True"}
    _wait(operator, lambda: "Reconciled" in _event_reasons(state), "Reconciled event")

    # Turn routing on for the existing endpoint (HyperPod refuses this), then off again.
    state.patch((*CR, "default", "qwen-l1"), {"spec": {"intelligentRoutingSpec": {
        "enabled": True, "routingStrategy": "prefixaware"}}}, status_only=False)
    _wait(operator, lambda: "qwen-l1-router" in _names(state, "apps/v1", "deployments"),
          "router Deployment applied after update")
    _wait(operator, lambda: _names(state, "rbac.authorization.k8s.io/v1", "roles") == ["qwen-l1-router"],
          "router Role applied")
    _wait(operator, lambda: _cr(state, "qwen-l1")["status"]["endpointUrl"].startswith(
        "http://qwen-l1-router."), "endpoint URL moved to the router")

    state.patch((*CR, "default", "qwen-l1"), {"spec": {"intelligentRoutingSpec": {
        "enabled": False}}}, status_only=False)
    _wait(operator, lambda: _names(state, "apps/v1", "deployments") == ["qwen-l1-worker"],
          "router pruned after routing was turned off")
    _wait(operator, lambda: _names(state, "rbac.authorization.k8s.io/v1", "roles") == [],
          "router Role pruned")

    # An invalid spec: nothing is applied, the status and an event name the field.
    broken = yaml.safe_load((REPO / "deploy" / "samples" / "l1-only.yaml").read_text())
    broken["metadata"]["name"] = "broken"
    broken["spec"]["kvCacheSpec"]["evictionPolicy"] = "mru"
    state.put(*CR, broken)
    _wait(operator, lambda: "InvalidSpec" in _event_reasons(state), "InvalidSpec event")
    _wait(operator, lambda: "conditions" in _cr(state, "broken").get("status", {}),
          "invalid status written")
    spec_valid = next(c for c in _cr(state, "broken")["status"]["conditions"]
                      if c["type"] == "SpecValid")
    assert (spec_valid["status"], spec_valid["message"]) == (
        "False", "spec.kvCacheSpec.evictionPolicy: Input should be 'lru', 'lfu' or 'fifo'")
    assert "broken-worker" not in _names(state, "apps/v1", "deployments")
