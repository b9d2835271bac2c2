"""Side by side: the same seeded workload against several fleet configurations, one after another.

Configurations are named as in :mod:`kvmesh.bench.configs`. Each one gets a
fresh fleet (cold caches), so runs never help each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kvmesh.bench.fleet import Fleet, FleetConfig
from kvmesh.bench.runner import LoadConfig, run_load
from kvmesh.bench.scrape import fetch_metrics_text, router_stats
from kvmesh.bench.stats import RequestRecord, Summary, summarize
from kvmesh.bench.workloads.base import Workload

@dataclass
class ConfigResult:
    """One configuration's run."""

    name: str
    fleet: FleetConfig
    summary: Summary
    records: list[RequestRecord]
    router: dict[str, float | None] = field(default_factory=dict)
    """What the router's metrics said after the run (see :func:`kvmesh.bench.scrape.router_stats`)."""


RATIO_KEYS = ("ttft_p50_ms", "ttft_p90_ms", "output_tokens_per_s", "cost_per_1k_tokens")
"""Summary fields compared against the baseline."""


def ratios(result: Summary, baseline: Summary) -> dict[str, float | None]:
    """``result / baseline`` for each of :data:`RATIO_KEYS` (None where either is missing or zero)."""
    out: dict[str, float | None] = {}
    a, b = result.to_dict(), baseline.to_dict()
    for key in RATIO_KEYS:
        num, den = a[key], b[key]
        out[key] = float(num) / float(den) if num is not None and den else None  # type: ignore[arg-type]
    return out


async def run_one(name: str, fleet_config: FleetConfig, make_workload: Callable[[], Workload],
                  load: LoadConfig, price_per_hour: float, progress: Callable[[str], None]) -> ConfigResult:
    """Start a fleet for one config, drive the workload through its router, stop it."""
    fleet = Fleet(fleet_config)
    # Start and stop block the event loop on purpose: nothing else runs meanwhile, and
    # a cancellation (Ctrl-C) can then never leave a half-started fleet behind.
    try:
        url = fleet.start(progress)
        progress(f"[{name}] fleet up at {url}; running the workload")
        records, wall_s = await run_load(_with_url(load, url), make_workload())
        router = _router_stats(url)
    finally:
        fleet.close()
    summary = summarize(records, wall_s, price_per_hour)
    progress(f"[{name}] done: {summary.requests_ok} ok, {summary.requests_failed} failed, "
             f"TTFT P50 {summary.ttft_p50_ms or 0:.1f} ms")
    return ConfigResult(name, fleet_config, summary, records, router)


def _router_stats(url: str) -> dict[str, float | None]:
    try:
        return router_stats(fetch_metrics_text(url))
    except (OSError, ValueError):  # metrics are extra: never fail a run over them
        return {}


def _with_url(load: LoadConfig, url: str) -> LoadConfig:
    from dataclasses import replace

    return replace(load, url=url)


async def run_compare(configs: Sequence[tuple[str, FleetConfig]], make_workload: Callable[[], Workload],
                      load: LoadConfig, price_per_hour: float,
                      progress: Callable[[str], None] = lambda _m: None,
                      results: list[ConfigResult] | None = None) -> list[ConfigResult]:
    """Run every config in turn (never in parallel: they would share the CPU).

    Results are appended to ``results`` as they finish, so a caller still has the
    completed ones when a later fleet fails to start.
    """
    results = [] if results is None else results
    for name, fleet_config in configs:
        results.append(await run_one(name, fleet_config, make_workload, load, price_per_hour, progress))
    return results

