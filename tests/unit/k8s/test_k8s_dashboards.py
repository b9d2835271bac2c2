"""Dashboards are current, well-formed, and query only metrics the code really defines."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from k8s_testlib import REPO, SAMPLES

from kvmesh.cli import main
from kvmesh.k8s.dashboards import DASHBOARDS, dashboard_json, dashboard_text

SRC = REPO / "src" / "kvmesh"
DASHBOARD_DIR = REPO / "deploy" / "dashboards"
SERIES_SUFFIXES: dict[str, tuple[str, ...]] = {
    # What each metric type puts on the wire (prometheus_client exposition).
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
    "Info": ("_info",),
    "Enum": ("",),
}
CONSTRUCTORS = {**{kind: kind for kind in SERIES_SUFFIXES},
                **{f"{kind}MetricFamily": kind for kind in SERIES_SUFFIXES}}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "le", "inf", "nan"}


# --- the metric names defined in src/kvmesh, found statically -----------------------------------

def _string_bindings(tree: ast.AST) -> dict[str, set[str]]:
    """Name -> string values it may hold: ``p = "x_"`` and ``for a, b in (("s", ...), ...)``."""
    values: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values.setdefault(target.id, set()).add(node.value.value)
        if isinstance(node, (ast.For, ast.comprehension)) \
                and isinstance(node.iter, (ast.Tuple, ast.List)):
            for item in node.iter.elts:
                pairs = [(node.target, item)]
                if isinstance(node.target, ast.Tuple) and isinstance(item, ast.Tuple):
                    pairs = list(zip(node.target.elts, item.elts, strict=False))
                for target, value in pairs:
                    if isinstance(target, ast.Name) and isinstance(value, ast.Constant) \
                            and isinstance(value.value, str):
                        values.setdefault(target.id, set()).add(value.value)
    return values


def _evaluate(node: ast.AST, names: dict[str, set[str]]) -> set[str]:
    """Every string ``node`` may evaluate to (empty set: not statically known)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Name):
        return names.get(node.id, set())
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return {a + b for a in _evaluate(node.left, names) for b in _evaluate(node.right, names)}
    if isinstance(node, ast.JoinedStr):
        out = {""}
        for part in node.values:
            inner = part.value if isinstance(part, ast.FormattedValue) else part
            out = {a + b for a in out for b in _evaluate(inner, names)}
        return out
    return set()


def _enclosing_functions(tree: ast.AST) -> dict[ast.AST, ast.FunctionDef]:
    """Node -> the innermost function definition containing it."""
    owner: dict[ast.AST, ast.FunctionDef] = {}

    def visit(node: ast.AST, current: ast.FunctionDef | None) -> None:
        for child in ast.iter_child_nodes(node):
            if current is not None:
                owner[child] = current
            visit(child, child if isinstance(child, ast.FunctionDef) else current)

    visit(tree, None)
    return owner


def _call_site_bindings(tree: ast.AST, fn: ast.FunctionDef,
                        names: dict[str, set[str]]) -> list[dict[str, set[str]]]:
    """For a local factory such as ``def counter(name, ...): return Counter(P + name, ...)``,
    the parameter bindings of every ``counter("lookups", ...)`` call in the module."""
    params = [a.arg for a in fn.args.args]
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == fn.name:
            bound = {param: _evaluate(arg, names) for param, arg in zip(params, node.args,
                                                                         strict=False)}
            bound |= {kw.arg: _evaluate(kw.value, names) for kw in node.keywords if kw.arg}
            sites.append({**names, **bound})
    return sites or [names]


def defined_metrics(root: Path = SRC) -> dict[str, str]:
    """Name -> type of every Prometheus metric constructor whose name is statically known."""
    found: dict[str, str] = {}
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names = _string_bindings(tree)
        owners = _enclosing_functions(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
                node.func, "id", "")
            if func not in CONSTRUCTORS:
                continue
            args = [kw.value for kw in node.keywords if kw.arg == "name"] or node.args[:1]
            scopes = [names]
            if node in owners:
                scopes = _call_site_bindings(tree, owners[node], names)
            for arg in args:
                for scope in scopes:
                    found.update(dict.fromkeys(_evaluate(arg, scope), CONSTRUCTORS[func]))
    return found


def _exposed(defined: dict[str, str]) -> set[str]:
    # Counter("x") and CounterMetricFamily("x_total") both expose x_total.
    return {name.removesuffix("_total") + suffix
            for name, kind in defined.items() for suffix in SERIES_SUFFIXES[kind]}


# --- the metric names a PromQL expression uses ---------------------------------------------------

def queried_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, labels or words."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    text = re.sub(r"\{[^}]*\}", "", text)                       # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                      # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group().lower() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def dashboard_queries() -> Iterator[tuple[str, str]]:
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                yield f"{path.stem}: {panel['title']}", target["expr"]
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                inner = re.fullmatch(r"label_values\((\w+), \w+\)", var["query"])
                assert inner, var["query"]
                yield f"{path.stem}: ${var['name']}", inner.group(1)


def test_scanner_finds_known_definition_styles(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        'p = "kvmesh_x_"\n'
        'Counter(p + "hits", "h")\n'
        'Gauge(name="kvmesh_y_bytes", documentation="d")\n'
        'for n, doc in (("a", "A"), ("b", "B")):\n'
        '    CounterMetricFamily(f"kvmesh_z_{n}", doc)\n'
        'Histogram(some_call(), "not static")\n'
        'def gauge(name, doc):\n'
        '    return Gauge(p + name, doc)\n'
        'gauge("used_bytes", "u")\n'
        'gauge(name="free_bytes", doc="f")\n')
    defined = defined_metrics(tmp_path)
    assert defined == {"kvmesh_x_hits": "Counter", "kvmesh_y_bytes": "Gauge",
                       "kvmesh_z_a": "Counter", "kvmesh_z_b": "Counter",
                       "kvmesh_x_used_bytes": "Gauge", "kvmesh_x_free_bytes": "Gauge"}
    assert _exposed(defined) == {
        "kvmesh_x_hits_total", "kvmesh_x_hits_created", "kvmesh_y_bytes", "kvmesh_z_a_total",
        "kvmesh_z_a_created", "kvmesh_z_b_total", "kvmesh_z_b_created", "kvmesh_x_used_bytes",
        "kvmesh_x_free_bytes"}


def test_query_parser() -> None:
    expr = ('histogram_quantile(0.9, sum by (le, op) (rate(kvmesh_a_bucket{namespace=~"$ns", '
            'op="get"}[$__rate_interval]))) / ignoring(tier) group_left sum(kvmesh_b_total)')
    assert queried_metrics(expr) == {"kvmesh_a_bucket", "kvmesh_b_total"}


def test_every_queried_metric_is_defined_in_the_code() -> None:
    exposed = _exposed(defined_metrics())
    missing = sorted({(where, name) for where, expr in dashboard_queries()
                      for name in queried_metrics(expr) if name not in exposed})
    assert missing == []


def test_dashboards_cover_the_issue_topics() -> None:
    titles = {stem: " | ".join(p.title for p in board.panels) for stem, board in DASHBOARDS.items()}
    for stem, words in {"cache": ["hit rate per tier", "bytes", "Evictions", "L2 errors"],
                        "routing": ["Routing decisions", "per endpoint"],
                        "latency": ["TTFT P50 / P90", "Throughput"]}.items():
        for word in words:
            assert word in titles[stem], (stem, word)


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_checked_in_dashboards_are_generated(stem: str) -> None:
    assert (DASHBOARD_DIR / f"{stem}.json").read_text() == dashboard_text(DASHBOARDS[stem])


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_dashboard_layout_is_valid(stem: str) -> None:
    board = dashboard_json(DASHBOARDS[stem])
    ids = [p["id"] for p in board["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    cells = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in board["panels"]}
    assert len(cells) == len(ids)  # no two panels overlap
    for panel in board["panels"]:
        assert [t["refId"] for t in panel["targets"]] == [
            chr(ord("A") + i) for i in range(len(panel["targets"]))]
        assert all('namespace=~"$namespace"' in t["expr"] for t in panel["targets"])


def test_cli_writes_the_dashboards(tmp_path: Path) -> None:
    assert main(["operator", "dashboards", "-o", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json", "latency.json",
                                                          "routing.json"]
    assert (tmp_path / "cache.json").read_text() == (DASHBOARD_DIR / "cache.json").read_text()


def test_sample_autoscaling_queries_use_defined_metrics() -> None:
    exposed = _exposed(defined_metrics())
    queries = []
    for sample in SAMPLES:
        routing = yaml.safe_load(sample.read_text())["spec"].get("intelligentRoutingSpec", {})
        if "autoScalingSpec" in routing:
            queries.append(routing["autoScalingSpec"]["prometheusTrigger"]["query"])
    assert queries, "no sample exercises autoscaling"
    assert sorted({n for q in queries for n in queried_metrics(q)} - exposed) == []
