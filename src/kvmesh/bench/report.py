"""Rendering of benchmark results: Markdown tables and JSON documents."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from kvmesh.bench.stats import RequestRecord, Summary

SERVE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("requests_ok", "requests ok", "{:d}"),
    ("requests_failed", "requests failed", "{:d}"),
    ("duration_s", "duration (s)", "{:.2f}"),
    ("ttft_p50_ms", "TTFT P50 (ms)", "{:.1f}"),
    ("ttft_p90_ms", "TTFT P90 (ms)", "{:.1f}"),
    ("ttft_p99_ms", "TTFT P99 (ms)", "{:.1f}"),
    ("itl_p50_ms", "ITL P50 (ms)", "{:.2f}"),
    ("itl_p90_ms", "ITL P90 (ms)", "{:.2f}"),
    ("e2e_p50_ms", "E2E P50 (ms)", "{:.1f}"),
    ("e2e_p90_ms", "E2E P90 (ms)", "{:.1f}"),
    ("input_tokens_per_s", "input tokens/s", "{:.1f}"),
    ("output_tokens_per_s", "output tokens/s", "{:.1f}"),
    ("cache_hit_ratio", "cache hit ratio", "{:.3f}"),
    ("cost_per_1k_tokens", "cost per 1K tokens (USD)", "{:.3g}"),
)
"""(summary field, label, format) of each row of ``bench serve``'s table."""


def fmt(value: object, spec: str) -> str:
    """Format one cell; missing values print as an em dash."""
    if value is None:
        return "—"
    return spec.format(value)


def serve_markdown(summary: Summary, title: str) -> str:
    """``bench serve``'s Markdown table."""
    data = summary.to_dict()
    lines = [f"### {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {label} | {fmt(data[key], spec)} |" for key, label, spec in SERVE_ROWS]
    return "\n".join(lines) + "\n"


def write_run(output: Path, summary: Summary, records: Sequence[RequestRecord], meta: dict[str, object]) -> None:
    """Write ``summary.json`` (meta + summary) and ``requests.jsonl`` under ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.json").write_text(json.dumps({**meta, **summary.to_dict()}, indent=2) + "\n")
    with (output / "requests.jsonl").open("w") as f:
        for record in records:
            f.write(json.dumps(asdict(record)) + "\n")
