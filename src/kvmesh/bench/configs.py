"""Names of side-by-side fleet configurations (kept import-light for the CLI).

A configuration is written as ``+``-joined tokens applied, in order, on top of
the baseline (no offload, round-robin, the engine's own prefix cache at its
default)::

    baseline              no L1, no L2, roundrobin
    l1                    + L1 CPU tier on every worker
    l1+l2                 + the kvmesh store as L2
    l1+redis              + a Redis L2 instead
    l1+l2+kvaware         + KV-event-aware routing
    prefixaware           routing only, no offload
"""

from __future__ import annotations

from kvmesh.bench.fleet import GIB, STRATEGIES, FleetConfig

DEFAULT_CONFIGS = "baseline,l1,l1+l2,l1+l2+prefixaware,l1+l2+kvaware"

CONFIG_TOKENS: dict[str, dict[str, object]] = {
    "baseline": {"l1_size_bytes": 0, "l2": "none", "routing_strategy": "roundrobin"},
    "l1": {"l1_size_bytes": 4 * GIB},
    "l2": {"l2": "kvmesh"},
    "store": {"l2": "kvmesh"},
    "redis": {"l2": "redis"},
    **{strategy: {"routing_strategy": strategy} for strategy in STRATEGIES},
}
"""Config token -> FleetConfig changes it makes."""


def parse_config_name(name: str, base: FleetConfig) -> FleetConfig:
    """The fleet of config ``name`` (e.g. ``l1+l2+kvaware``); ``ValueError`` names a bad token."""
    config = base.with_changes(**CONFIG_TOKENS["baseline"])
    for token in name.split("+"):
        changes = CONFIG_TOKENS.get(token.strip())
        if changes is None:
            raise ValueError(f"unknown config token {token!r} in {name!r}; use {sorted(CONFIG_TOKENS)} joined by +")
        if token.strip() == "l1" and base.l1_size_bytes:
            changes = {"l1_size_bytes": base.l1_size_bytes}  # honour the size the caller chose
        config = config.with_changes(**changes)
    return config


def parse_config_list(text: str, base: FleetConfig) -> list[tuple[str, FleetConfig]]:
    """``"baseline,l1+l2"`` -> named fleet configs; ``ValueError`` on empty or duplicate names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("no configs given")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate config in {text!r}")
    return [(name, parse_config_name(name, base)) for name in names]
