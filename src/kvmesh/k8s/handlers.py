"""kopf handlers: thin glue between kopf's callbacks and the pure builders.

Each handler takes kopf's keyword arguments (``body``, ``patch``, ``memo``,
``logger``, ...), so tests call them exactly as kopf would, with a fake
:class:`~kvmesh.k8s.api.ClusterApi` in ``memo.ctx``. ``kopf`` itself is
imported only by :func:`register_handlers`, which wraps them for a real
operator and maps errors onto kopf's retry policy:

- :class:`~kvmesh.k8s.spec.InvalidSpecError` -> ``kopf.PermanentError`` (no retry
  until the spec changes);
- :class:`~kvmesh.common.errors.KvmeshError` (API trouble, a CRD such as KEDA
  missing) -> ``kopf.TemporaryError`` (retried with a delay).

Reconcile = render, apply every child (server-side apply), prune children the
spec no longer asks for (routing turned off, L2 switched from tieredstorage to
redis, ...), then write the status. Because every step converges, create,
update (including enabling routing later, which HyperPod refuses) and resume
after an operator restart are the same function.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kvmesh.common.errors import KvmeshError
from kvmesh.k8s.api import ClusterApi
from kvmesh.k8s.builders.common import (
    LABEL_MANAGED_BY,
    MANAGED_BY,
    Manifest,
    RenderOptions,
    label_selector_string,
    selector_labels,
)
from kvmesh.k8s.render import MANAGED_KINDS, render_endpoint
from kvmesh.k8s.spec import GROUP, PLURAL, VERSION, Endpoint, InvalidSpecError, parse_endpoint
from kvmesh.k8s.status import Condition, observe, set_condition, status_fields

STATUS_INTERVAL_S = 15.0
"""How often the status timer re-reads readiness."""
RETRY_DELAY_S = 30.0
"""Delay before kopf retries after an API failure."""


def _utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class OperatorContext:
    """Long-lived operator state, handed to handlers through kopf's ``memo``."""

    api: ClusterApi
    """Where children are applied."""
    options: RenderOptions = field(default_factory=RenderOptions)
    """Operator-wide render settings."""
    now: Callable[[], str] = _utc_now
    """RFC 3339 timestamp source (fixed in tests)."""


def _context(memo: Any) -> OperatorContext:
    return memo.ctx  # type: ignore[no-any-return]


def _status_patch(patch: dict[str, Any]) -> dict[str, Any]:
    return patch.setdefault("status", {})  # type: ignore[no-any-return]


def _write_conditions(body: Mapping[str, Any], patch: dict[str, Any], ctx: OperatorContext,
                      new: list[Condition]) -> list[dict[str, Any]]:
    generation = (body.get("metadata") or {}).get("generation")
    conditions = list((body.get("status") or {}).get("conditions") or [])
    for cond in new:
        conditions = set_condition(conditions, cond, ctx.now(), generation)
    _status_patch(patch)["conditions"] = conditions
    return conditions


def _key(manifest: Mapping[str, Any]) -> tuple[str, str]:
    return manifest["kind"], manifest["metadata"]["name"]


def prune(api: ClusterApi, endpoint: Endpoint, desired: list[Manifest]) -> list[tuple[str, str]]:
    """Delete children of ``endpoint`` that ``desired`` no longer contains."""
    keep = {_key(m) for m in desired}
    selector = label_selector_string({**selector_labels(endpoint), LABEL_MANAGED_BY: MANAGED_BY})
    deleted = []
    for api_version, kind in MANAGED_KINDS:
        for obj in api.list(api_version, kind, endpoint.namespace, selector):
            key = _key(obj)
            if key not in keep and api.delete(api_version, kind, endpoint.namespace, key[1]):
                deleted.append(key)
    return deleted


def _parse_or_report(body: Mapping[str, Any], patch: dict[str, Any],
                     ctx: OperatorContext) -> Endpoint:
    try:
        return parse_endpoint(body)
    except InvalidSpecError as exc:
        _write_conditions(body, patch, ctx, [
            Condition("SpecValid", "False", "InvalidSpec", str(exc)),
            Condition("Ready", "False", "InvalidSpec", "fix the spec; nothing was applied"),
        ])
        ctx.api.event(body, "Warning", "InvalidSpec", str(exc))
        raise


def reconcile(body: Mapping[str, Any], patch: dict[str, Any], memo: Any,
              logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    """create / update / resume: converge the children to the spec, then report."""
    ctx = _context(memo)
    endpoint = _parse_or_report(body, patch, ctx)
    desired = render_endpoint(endpoint, ctx.options)
    try:
        for manifest in desired:
            ctx.api.apply(manifest)
        pruned = prune(ctx.api, endpoint, desired)
    except KvmeshError as exc:
        _write_conditions(body, patch, ctx, [
            Condition("SpecValid", "True", "Valid"),
            Condition("Ready", "False", "ApplyFailed", str(exc)),
        ])
        ctx.api.event(body, "Warning", "ApplyFailed", str(exc))
        raise
    summary = f"applied {len(desired)} objects, pruned {len(pruned)}"
    if pruned:
        summary += ": " + ", ".join(f"{kind}/{name}" for kind, name in pruned)
    logger.info(summary)
    ctx.api.event(body, "Normal", "Reconciled", summary)
    if endpoint.spec.tls_config is not None:
        ctx.api.event(body, "Warning", "TLSNotImplemented",
                      "tlsConfig is accepted for HyperPod compatibility; kvmesh serves plain "
                      "HTTP, terminate TLS at an Ingress or service mesh")
    observed = observe(ctx.api, endpoint)
    _status_patch(patch).update({
        **status_fields(endpoint, ctx.options, observed),
        "observedGeneration": endpoint.generation,
    })
    _write_conditions(body, patch, ctx, [Condition("SpecValid", "True", "Valid"),
                                          *observed.conditions()])


def refresh_status(body: Mapping[str, Any], patch: dict[str, Any], memo: Any,
                   **_: Any) -> None:
    """Timer: re-read readiness; patch only what changed and announce Ready flips."""
    ctx = _context(memo)
    try:
        endpoint = parse_endpoint(body)
    except InvalidSpecError:
        return  # reconcile already reported it; nothing is deployed to observe
    observed = observe(ctx.api, endpoint)
    status = body.get("status") or {}
    changed = {k: v for k, v in status_fields(endpoint, ctx.options, observed).items()
               if status.get(k) != v}
    old = {c.get("type"): c for c in status.get("conditions") or []}
    new = observed.conditions()
    if changed:
        _status_patch(patch).update(changed)
    if any((old.get(c.type) or {}).get("status") != c.status
           or (old.get(c.type) or {}).get("message") != c.message for c in new):
        _write_conditions(body, patch, ctx, new)
    was_ready = (old.get("Ready") or {}).get("status")
    ready = new[0]
    if ready.status != was_ready and was_ready is not None:
        ctx.api.event(body, "Normal" if ready.status == "True" else "Warning",
                      "Ready" if ready.status == "True" else "NotReady", ready.message)


def register_handlers(registry: Any) -> None:
    """Register the handlers on a ``kopf.OperatorRegistry`` (imports kopf)."""
    import kopf  # noqa: PLC0415 (kopf only for `kvmesh operator run`)

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        def handler(**kwargs: Any) -> None:
            try:
                fn(**kwargs)
            except InvalidSpecError as exc:
                raise kopf.PermanentError(str(exc)) from exc
            except KvmeshError as exc:
                raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_S) from exc

        handler.__name__ = fn.__name__
        return handler

    # A private registry lacks kopf's default login handlers: authenticate the
    # way the Kubernetes client does (in-cluster service account, else kubeconfig).
    kopf.on.login(registry=registry, id="login")(kopf.login_via_client)
    resource = (GROUP, VERSION, PLURAL)
    reconcile_handler = wrap(reconcile)
    kopf.on.create(*resource, registry=registry, id="reconcile")(reconcile_handler)
    kopf.on.update(*resource, registry=registry, id="reconcile")(reconcile_handler)
    kopf.on.resume(*resource, registry=registry, id="reconcile")(reconcile_handler)
    kopf.timer(*resource, registry=registry, id="status", interval=STATUS_INTERVAL_S,
               initial_delay=STATUS_INTERVAL_S)(wrap(refresh_status))
