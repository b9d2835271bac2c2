"""``bench compare`` outputs: the side-by-side table (Markdown, JSON) and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kvmesh.bench.compare import ConfigResult, ratios
from kvmesh.bench.report import fmt

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ttft_p50_ms", "TTFT P50 (ms)", "{:.1f}"),
    ("ttft_p90_ms", "TTFT P90 (ms)", "{:.1f}"),
    ("output_tokens_per_s", "output tok/s", "{:.1f}"),
    ("cost_per_1k_tokens", "USD / 1K tok", "{:.3g}"),
)
"""Metric columns of the table, each followed by its ratio to the baseline."""


def _ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    return f"×{ratio:.2f} ({(ratio - 1) * 100:+.0f} %)"


def compare_document(results: Sequence[ConfigResult], meta: dict[str, object]) -> dict[str, object]:
    """The JSON document: meta, then one entry per config with its summary and ratios."""
    baseline = results[0].summary
    return {
        **meta,
        "baseline": results[0].name,
        "configs": [
            {"name": r.name, "l1_size_bytes": r.fleet.l1_size_bytes, "l2": r.fleet.l2,
             "routing_strategy": r.fleet.routing_strategy, **r.summary.to_dict(),
             "ratio_vs_baseline": ratios(r.summary, baseline), "router": r.router}
            for r in results
        ],
    }


def compare_markdown(results: Sequence[ConfigResult], title: str) -> str:
    """The side-by-side table; ratios are against the first config (the baseline)."""
    baseline = results[0].summary
    head = ["config", "ok/failed", "hit ratio"]
    for _key, label, _spec in COLUMNS:
        head += [label, "vs base"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        data, rat = r.summary.to_dict(), ratios(r.summary, baseline)
        row = [r.name, f"{r.summary.requests_ok}/{r.summary.requests_failed}",
               fmt(r.summary.cache_hit_ratio, "{:.2f}")]
        for key, _label, spec in COLUMNS:
            row += [fmt(data[key], spec), _ratio_text(rat[key])]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| config | router index entries | router index bytes | decision P99 (ms) |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {fmt(r.router.get('index_entries'), '{:.0f}')} | "
                     f"{fmt(r.router.get('index_bytes'), '{:.0f}')} | {fmt(r.router.get('decision_p99_ms'), '{:.3f}')} |")
    return "\n".join(lines) + "\n"


def write_plots(results: Sequence[ConfigResult], output: Path) -> list[Path]:
    """TTFT CDF, P50/P90 bars, throughput and cost PNGs; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in results]
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        ttfts = np.sort([rec.ttft_s * 1e3 for rec in r.records if rec.ok and rec.ttft_s is not None])
        if ttfts.size:
            ax.plot(ttfts, np.arange(1, ttfts.size + 1) / ttfts.size, label=r.name)
    ax.set(xscale="log", xlabel="TTFT (ms, log)", ylabel="fraction of requests", title="TTFT CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    paths.append(_save(fig, output / "ttft_cdf.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(len(results))
    p50 = [r.summary.ttft_p50_ms or 0 for r in results]
    p90 = [r.summary.ttft_p90_ms or 0 for r in results]
    ax.bar(x - 0.2, p50, 0.4, label="P50")
    ax.bar(x + 0.2, p90, 0.4, label="P90")
    ax.set(xticks=x, ylabel="TTFT (ms)", title="TTFT P50 and P90")
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.legend()
    paths.append(_save(fig, output / "ttft_bars.png"))

    for key, ylabel, title, filename in (
        ("output_tokens_per_s", "output tokens / s", "Throughput", "throughput.png"),
        ("cost_per_1k_tokens", "USD per 1K tokens", "Cost", "cost.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.bar(names, [r.summary.to_dict()[key] or 0 for r in results])
        ax.set(ylabel=ylabel, title=title)
        ax.tick_params(axis="x", labelrotation=20)
        paths.append(_save(fig, output / filename))
    return paths


def _save(fig: object, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=110)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path


def write_compare(results: Sequence[ConfigResult], output: Path, meta: dict[str, object], title: str) -> None:
    """compare.json, compare.md, per-config requests.jsonl and the plots under ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "compare.json").write_text(json.dumps(compare_document(results, meta), indent=2) + "\n")
    (output / "compare.md").write_text(compare_markdown(results, title))
    for r in results:
        safe = r.name.replace("+", "_")
        with (output / f"requests_{safe}.jsonl").open("w") as f:
            for rec in r.records:
                f.write(json.dumps(rec.__dict__) + "\n")
    write_plots(results, output)
