"""``kvmesh operator``: run the kopf operator, render manifests, print the CRD and dashboards.

    kvmesh operator run [--namespace NS ... | --all-namespaces] [--kvmesh-image IMG]
    kvmesh operator render -f endpoint.yaml [-f more.yaml] [--namespace NS]
    kvmesh operator crd
    kvmesh operator dashboards -o deploy/dashboards

kopf and the Kubernetes client are imported only inside ``run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from kvmesh.common.cli_args import port_arg
from kvmesh.k8s.builders.common import RenderOptions


def _options(args: argparse.Namespace) -> RenderOptions:
    return RenderOptions(kvmesh_image=args.kvmesh_image, image_pull_policy=args.image_pull_policy,
                         cluster_domain=args.cluster_domain)


def _add_render_flags(parser: argparse.ArgumentParser) -> None:
    defaults = RenderOptions()
    parser.add_argument("--kvmesh-image", default=defaults.kvmesh_image,
                        help="image of router and store pods (default: %(default)s)")
    parser.add_argument("--image-pull-policy", default=defaults.image_pull_policy,
                        choices=["Always", "IfNotPresent", "Never"])
    parser.add_argument("--cluster-domain", default=defaults.cluster_domain,
                        help="DNS suffix of in-cluster URLs (default: %(default)s)")


def _render(args: argparse.Namespace) -> int:
    from kvmesh.k8s.render import render_documents, to_yaml  # noqa: PLC0415
    from kvmesh.k8s.spec import InvalidSpecError  # noqa: PLC0415

    bodies: list[dict[str, Any]] = []
    for path in args.file:
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text()
            bodies += [doc for doc in yaml.safe_load_all(text) if doc]
        except (OSError, yaml.YAMLError) as exc:
            print(f"kvmesh operator render: error: argument -f: {path}: {exc}".splitlines()[0],
                  file=sys.stderr)
            return 2
    try:
        manifests = render_documents(bodies, _options(args), namespace=args.namespace)
    except InvalidSpecError as exc:
        for message in exc.messages:
            print(f"kvmesh operator render: invalid spec: {message}", file=sys.stderr)
        return 1
    sys.stdout.write(to_yaml(manifests))
    return 0


def _crd(_args: argparse.Namespace) -> int:
    from kvmesh.k8s.crd import crd_yaml  # noqa: PLC0415

    sys.stdout.write(crd_yaml())
    return 0


def _dashboards(args: argparse.Namespace) -> int:
    from kvmesh.k8s.dashboards import DASHBOARDS, dashboard_text  # noqa: PLC0415

    try:
        args.output.mkdir(parents=True, exist_ok=True)
        for stem, dashboard in DASHBOARDS.items():
            (args.output / f"{stem}.json").write_text(dashboard_text(dashboard))
    except OSError as exc:
        print(f"kvmesh operator dashboards: error: argument -o: {exc}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    import kopf  # noqa: PLC0415 (heavy; only the operator needs it)

    from kvmesh.common.errors import TransportError  # noqa: PLC0415
    from kvmesh.k8s.api import KubernetesClusterApi  # noqa: PLC0415
    from kvmesh.k8s.handlers import OperatorContext, register_handlers  # noqa: PLC0415

    kopf.configure(verbose=args.verbose)  # INFO (one line per reconcile), or DEBUG
    registry = kopf.OperatorRegistry()
    register_handlers(registry)
    try:
        api = KubernetesClusterApi()
    except TransportError as exc:
        print(f"kvmesh operator run: error: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    memo = kopf.Memo(ctx=OperatorContext(api=api, options=_options(args)))
    liveness = f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None
    asyncio.run(kopf.operator(
        registry=registry, memo=memo, standalone=True, liveness_endpoint=liveness,
        clusterwide=args.all_namespaces, namespaces=args.namespace or (),
    ))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``kvmesh operator`` and its ``run``, ``render`` and ``crd`` subcommands."""
    parser = subparsers.add_parser("operator",
                                   help="Kubernetes operator for InferenceEndpointConfig")
    sub = parser.add_subparsers(dest="operator_command", metavar="ACTION")

    run = sub.add_parser("run", help="reconcile InferenceEndpointConfig resources (kopf)")
    scope = run.add_mutually_exclusive_group(required=True)
    scope.add_argument("--namespace", action="append", help="namespace to watch (repeatable)")
    scope.add_argument("--all-namespaces", action="store_true", help="watch the whole cluster")
    run.add_argument("--health-port", type=port_arg, default=8080,
                     help="liveness endpoint port, 0 disables (default: %(default)s)")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    _add_render_flags(run)
    run.set_defaults(func=_run)

    render = sub.add_parser("render", help="print the manifests the operator would apply")
    render.add_argument("-f", "--file", type=Path, action="append", required=True,
                        help="InferenceEndpointConfig YAML ('-' for stdin; repeatable)")
    render.add_argument("--namespace", help="namespace for resources that name none")
    _add_render_flags(render)
    render.set_defaults(func=_render)

    crd = sub.add_parser("crd", help="print the CustomResourceDefinition")
    crd.set_defaults(func=_crd)

    dashboards = sub.add_parser("dashboards", help="write the Grafana dashboards (JSON)")
    dashboards.add_argument("-o", "--output", type=Path, required=True, help="directory")
    dashboards.set_defaults(func=_dashboards)

    parser.set_defaults(func=lambda _args: (parser.print_help(sys.stderr), 2)[1])
