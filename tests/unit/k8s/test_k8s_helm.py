"""The Helm chart: rendered (helm_lite), schema-valid, least privilege equal to the code's.

There is no `helm` binary on the build machines: :mod:`helm_lite` interprets
the Go-template subset the chart uses, and the static checks below make sure
every value and flag a template names exists.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from k8s_testlib import REPO
from k8s_helm_lite import Chart

from kvmesh import __version__
from kvmesh.cli import build_parser
from kvmesh.k8s.builders.rbac import OPERATOR_RULES, ROUTER_RULES
from kvmesh.k8s.crd import build_crd
from kvmesh.k8s.render import MANAGED_KINDS

CHART = REPO / "deploy" / "helm" / "kvmesh-operator"
TEMPLATES = sorted((CHART / "templates").glob("*.yaml"))


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["name"], chart["type"]) == (
        "v2", "kvmesh-operator", "application")
    assert chart["appVersion"] == __version__


def _by_kind(overrides: dict[str, Any] | None = None,
             release: str = "kvmesh") -> dict[str, dict[str, Any]]:
    docs = Chart(CHART, release=release).manifests(overrides)
    kinds = {doc["kind"]: doc for doc in docs}
    assert len(kinds) == len(docs)
    return kinds


def _operator_run_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    operator = sub.choices["operator"]
    op_sub = next(a for a in operator._actions if isinstance(a, argparse._SubParsersAction))
    return op_sub.choices["run"]  # type: ignore[no-any-return]


def test_default_render_is_schema_valid_and_wired() -> None:
    kinds = _by_kind()
    assert sorted(kinds) == ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                             "Deployment", "ServiceAccount"]
    for doc in kinds.values():
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    assert kinds["CustomResourceDefinition"] == build_crd()
    assert kinds["ClusterRole"]["rules"] == OPERATOR_RULES
    account = kinds["ServiceAccount"]["metadata"]
    binding = kinds["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == kinds["ClusterRole"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                    "namespace": account["namespace"]}]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]
    assert pod["containers"][0]["image"] == f"kvmesh/kvmesh:{__version__}"


@pytest.mark.parametrize(("release", "name"), [("kvmesh", "kvmesh-kvmesh-operator"),
                                               ("kvmesh-operator", "kvmesh-operator")])
def test_release_naming(release: str, name: str) -> None:
    assert _by_kind(release=release)["Deployment"]["metadata"]["name"] == name


@pytest.mark.parametrize(("overrides", "namespaces", "all_namespaces", "image"), [
    ({}, None, True, f"kvmesh/kvmesh:{__version__}"),
    ({"watchNamespaces": ["team-a", "team-b"], "kvmeshImage": "reg/kvmesh:dev"},
     ["team-a", "team-b"], False, "reg/kvmesh:dev"),
])
def test_operator_args_parse_with_operator_run(overrides: dict[str, Any], namespaces: Any,
                                               all_namespaces: bool, image: str) -> None:
    container = _by_kind(overrides)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kvmesh", "operator", "run"]
    args = _operator_run_parser().parse_args(container["args"])
    assert (args.namespace, args.all_namespaces, args.kvmesh_image, args.health_port) == (
        namespaces, all_namespaces, image, 8080)


def test_optional_parts() -> None:
    kinds = _by_kind({"installCRDs": False, "healthPort": 0,
                      "nodeSelector": {"pool": "system"}})
    assert "CustomResourceDefinition" not in kinds
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert "livenessProbe" not in pod["containers"][0]
    kubernetes_validate.validate(kinds["Deployment"], "1.30.0", strict=True)


def _allowed(group: str, resource: str, verbs: set[str]) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verbs <= set(r["verbs"])
               for r in OPERATOR_RULES)


def test_operator_may_manage_every_child_kind_and_grant_router_rules() -> None:
    for api_version, kind in MANAGED_KINDS:
        group = api_version.rpartition("/")[0]
        verbs = {"get", "list", "create", "patch", "delete"}
        assert _allowed(group, kind.lower() + "s", verbs), kind
    for rule in ROUTER_RULES:  # RBAC forbids granting what the grantor lacks
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                assert _allowed(group, res, set(rule["verbs"])), res


def test_operator_holds_no_wildcards_or_secrets() -> None:
    for rule in OPERATOR_RULES:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert not {"secrets", "configmaps", "pods/exec"} & set(rule["resources"])


def _lookup(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_every_values_reference_exists() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    sources = TEMPLATES + [CHART / "templates" / "_helpers.tpl"]
    refs = {ref for path in sources for ref in re.findall(r"\.Values\.([\w.]+)", path.read_text())}
    assert refs, "templates reference no values"
    assert sorted(r for r in refs if not _lookup(values, r)) == []


def test_deployment_flags_exist_in_operator_run() -> None:
    text = (CHART / "templates" / "deployment.yaml").read_text()
    flags = set(re.findall(r"- (--[a-z-]+)", text))
    assert flags == {"--namespace", "--all-namespaces", "--kvmesh-image", "--image-pull-policy",
                     "--cluster-domain", "--health-port"}
    assert flags <= set(_operator_run_parser()._option_string_actions)


def test_templates_reference_only_defined_helpers() -> None:
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    defined = set(re.findall(r'define "([\w.-]+)"', helpers))
    used = {name for path in TEMPLATES
            for name in re.findall(r'include "([\w.-]+)"', path.read_text())}
    assert used and used <= defined
