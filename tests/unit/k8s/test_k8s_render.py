"""Rendering every sample: official Kubernetes schemas, CRD-kind schemas, CLI flags."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from k8s_testlib import SAMPLES

from kvmesh.cli import build_parser, main
from kvmesh.k8s.builders.common import LABEL_MANAGED_BY, RenderOptions
from kvmesh.k8s.render import MANAGED_KINDS, endpoint_url, render_documents, to_yaml
from kvmesh.k8s.spec import parse_endpoint

K8S_VERSION = "1.30.0"
"""Oldest Kubernetes we support; its official schemas ship offline in kubernetes-validate."""

# KEDA and Prometheus-operator kinds are CRDs, absent from the official schemas:
# these schemas hold the fields kvmesh emits, typed as the CRDs (KEDA v2.14,
# prometheus-operator v0.75) define them, and reject anything else.
_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}
_META = {"type": "object", "required": ["name", "namespace"]}
_SELECTOR = {"type": "object", "required": ["matchLabels"], "additionalProperties": False,
             "properties": {"matchLabels": {"type": "object",
                                            "additionalProperties": _STR}}}
_SCRAPE = {"type": "array", "minItems": 1, "items": {
    "type": "object", "required": ["port"], "additionalProperties": False,
    "properties": {"port": _STR, "path": {"type": "string", "pattern": "^/"},
                   "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}}}}
_WINDOW = {"type": "object", "additionalProperties": False,
           "properties": {"stabilizationWindowSeconds": _INT}}
CRD_KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": "keda.sh/v1alpha1"}, "metadata": _META, "spec": {
            "type": "object", "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"],
                                   "additionalProperties": False,
                                   "properties": {"apiVersion": _STR, "kind": _STR, "name": _STR}},
                "minReplicaCount": _INT, "maxReplicaCount": _INT, "pollingInterval": _INT,
                "cooldownPeriod": _INT, "initialCooldownPeriod": _INT,
                "advanced": {"type": "object", "properties": {"horizontalPodAutoscalerConfig": {
                    "type": "object", "properties": {"behavior": {
                        "type": "object", "additionalProperties": False,
                        "properties": {"scaleUp": _WINDOW, "scaleDown": _WINDOW}}}}}},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"const": "prometheus"}, "name": _STR,
                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                        "metadata": {"type": "object", "additionalProperties": _STR,
                                     "required": ["serverAddress", "query", "threshold"]}}}}}}}},
    "PodMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": "monitoring.coreos.com/v1"}, "metadata": _META,
                       "spec": {"type": "object", "required": ["selector", "podMetricsEndpoints"],
                                "additionalProperties": False,
                                "properties": {"selector": _SELECTOR,
                                               "podMetricsEndpoints": _SCRAPE}}}},
    "ServiceMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": "monitoring.coreos.com/v1"}, "metadata": _META,
                       "spec": {"type": "object", "required": ["selector", "endpoints"],
                                "additionalProperties": False,
                                "properties": {"selector": _SELECTOR, "endpoints": _SCRAPE}}}},
}


def render_sample(path: Path, uid: str | None = "0c1d-uid") -> list[dict[str, Any]]:
    body = yaml.safe_load(path.read_text())
    if uid:
        body["metadata"]["uid"] = uid
    return render_documents([body], RenderOptions())


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_every_manifest_validates(sample: Path) -> None:
    for manifest in render_sample(sample):
        kind = manifest["kind"]
        if kind in CRD_KIND_SCHEMAS:
            jsonschema.validate(manifest, CRD_KIND_SCHEMAS[kind])
            continue
        try:
            kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{manifest['metadata']['name']}: {exc.message}")


def test_official_validation_catches_a_broken_manifest() -> None:
    """Guards the test above: the validator really rejects an unknown field."""
    manifest = next(m for m in render_sample(SAMPLES[0]) if m["kind"] == "Deployment")
    manifest["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_children_are_owned_labelled_unique_and_managed(sample: Path) -> None:
    manifests = render_sample(sample)
    body = yaml.safe_load(sample.read_text())
    names = Counter((m["kind"], m["metadata"]["name"]) for m in manifests)
    assert max(names.values()) == 1
    for manifest in manifests:
        meta = manifest["metadata"]
        assert meta["namespace"] == body["metadata"]["namespace"]
        assert meta["labels"][LABEL_MANAGED_BY] == "kvmesh-operator"
        assert [ref["uid"] for ref in meta["ownerReferences"]] == ["0c1d-uid"]
        assert (manifest["apiVersion"], manifest["kind"]) in MANAGED_KINDS


def test_render_without_uid_has_no_owner_references() -> None:
    assert all("ownerReferences" not in m["metadata"] for m in render_sample(SAMPLES[0], None))


def test_rendering_is_deterministic() -> None:
    first = [to_yaml(render_sample(p)) for p in SAMPLES]
    assert first == [to_yaml(render_sample(p)) for p in SAMPLES]


def test_expected_children_per_sample() -> None:
    kinds = {p.stem: sorted(m["kind"] for m in render_sample(p)) for p in SAMPLES}
    router = ["Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]
    worker = ["Deployment", "Service"]
    assert kinds == {
        "l1-only": worker,
        "l1-l2-redis": worker,
        "l1-l2-tieredstorage": sorted(router + worker + ["DaemonSet", "Service", "PodMonitor"]),
        "routing-prefixaware": sorted(router + worker),
        "routing-kvaware": sorted(router + worker + ["ScaledObject", "ServiceMonitor"]),
        "routing-session": sorted(router + worker),
        "routing-roundrobin": sorted(router + worker),
        "instance-type-fallback": sorted(router + worker + ["DaemonSet", "Service"]),
    }


def test_endpoint_url_follows_routing() -> None:
    for stem, url in [
        ("l1-only", "http://qwen-l1-worker.default.svc.cluster.local:8000/v1/chat/completions"),
        ("routing-session",
         "http://chat-session-router.default.svc.cluster.local:8000/v1/chat/completions"),
    ]:
        body = yaml.safe_load(next(p for p in SAMPLES if p.stem == stem).read_text())
        assert endpoint_url(parse_endpoint(body), RenderOptions()) == url


# --- the rendered commands are valid for the real component CLIs --------------------------------

def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _commands() -> list[tuple[str, str, list[str]]]:
    out = []
    for sample in SAMPLES:
        for manifest in render_sample(sample):
            if manifest["kind"] not in ("Deployment", "DaemonSet"):
                continue
            container = manifest["spec"]["template"]["spec"]["containers"][0]
            out.append((f"{sample.stem}:{manifest['metadata']['name']}",
                        container["command"][1], container["args"]))
    return out


@pytest.mark.parametrize(("ident", "command", "args"), _commands(), ids=[c[0] for c in _commands()])
def test_rendered_args_parse_with_the_component_cli(ident: str, command: str, args: list[str],
                                                    tmp_path: Path) -> None:
    parsers = _subparsers()
    if command not in parsers:
        pytest.skip(f"`kvmesh {command}` is not registered in this checkout yet")
    # The kubelet expands $(HOST_IP), and the model volume exists only in the pod:
    # stand-ins make the arguments concrete without changing their shape.
    (tmp_path / "config.json").write_text("{}")
    concrete = [str(tmp_path) if a.startswith("/opt/ml/model") else
                a.replace("$(HOST_IP)", "10.0.0.7") for a in args]
    namespace = parsers[command].parse_args(concrete)
    assert callable(namespace.func)


# --- kvmesh operator render / crd ---------------------------------------------------------------

def test_cli_render_prints_what_the_operator_applies(capsys: pytest.CaptureFixture[str]) -> None:
    sample = SAMPLES[0]
    assert main(["operator", "render", "-f", str(sample), "-f", str(SAMPLES[1])]) == 0
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    bodies = [yaml.safe_load(p.read_text()) for p in (sample, SAMPLES[1])]
    assert printed == render_documents(bodies, RenderOptions())


def test_cli_render_reports_every_bad_field(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    body = yaml.safe_load(SAMPLES[0].read_text())
    body["spec"]["kvCacheSpec"]["evictionPolicy"] = "mru"
    body["spec"]["replicas"] = -2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(body))
    assert main(["operator", "render", "-f", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "kvmesh operator render: invalid spec: spec.replicas: Input should be greater than or "
        "equal to 0",
        "kvmesh operator render: invalid spec: spec.kvCacheSpec.evictionPolicy: Input should be "
        "'lru', 'lfu' or 'fifo'",
    ]


def test_cli_bad_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["operator", "render", "-f", "x.yaml", "--image-pull-policy", "Sometimes"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--image-pull-policy" in err[0]


def test_cli_missing_file_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operator", "render", "-f", "/nonexistent/ep.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kvmesh operator render: error: argument -f:")


def test_cli_crd_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    from kvmesh.k8s.crd import crd_yaml

    assert main(["operator", "crd"]) == 0
    assert capsys.readouterr().out == crd_yaml()


def test_cli_import_stays_light() -> None:
    """`kvmesh --help` must not pay for kopf or the Kubernetes client."""
    code = ("import sys; from kvmesh.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('kopf', 'kubernetes', 'kubernetes_validate') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_operator_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operator"]) == 2
    err = capsys.readouterr().err
    assert "run" in err and "render" in err and "crd" in err and "dashboards" in err
