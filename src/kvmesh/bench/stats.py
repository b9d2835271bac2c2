"""Per-request records and the summary a benchmark reports.

Definitions (all times from the client's side):

- TTFT: request sent -> first streamed content token.
- ITL: gaps between consecutive streamed content chunks, pooled over requests.
- E2E: request sent -> stream finished.
- Throughput: tokens of successful requests / wall time of the run.
- Cost per 1K tokens: ``price_per_hour * wall_hours / (input + output tokens) * 1000``,
  the fleet's price for the time the run kept it busy, spread over every token it
  processed. With no tokens it is ``None``.
- Cache hit ratio: ``cached_tokens / input tokens`` as reported by the engine's
  usage (``prompt_tokens_details.cached_tokens``); ``None`` when no engine reported it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class RequestRecord:
    """What the client observed for one request."""

    conv_id: str
    turn: int
    start_s: float
    """Monotonic send time."""
    ttft_s: float | None = None
    chunk_times_s: list[float] = field(default_factory=list)
    """Monotonic arrival time of each content chunk."""
    end_s: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.ttft_s is not None

    def itls_s(self) -> list[float]:
        times = self.chunk_times_s
        return [b - a for a, b in zip(times, times[1:])]


@dataclass(frozen=True)
class Summary:
    """The numbers one benchmark run reports (JSON keys are these field names)."""

    requests_ok: int
    requests_failed: int
    duration_s: float
    ttft_p50_ms: float | None
    ttft_p90_ms: float | None
    ttft_p99_ms: float | None
    ttft_mean_ms: float | None
    itl_p50_ms: float | None
    itl_p90_ms: float | None
    e2e_p50_ms: float | None
    e2e_p90_ms: float | None
    input_tokens: int
    output_tokens: int
    input_tokens_per_s: float
    output_tokens_per_s: float
    requests_per_s: float
    cache_hit_ratio: float | None
    price_per_hour: float
    cost_per_1k_tokens: float | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def percentile_ms(values_s: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation) in milliseconds; None when empty."""
    if not values_s:
        return None
    return float(np.percentile(np.asarray(values_s, dtype=np.float64), q) * 1e3)


def summarize(records: Sequence[RequestRecord], duration_s: float, price_per_hour: float) -> Summary:
    """Aggregate a run's records; ``ValueError`` for a non-positive duration or negative price."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if price_per_hour < 0:
        raise ValueError(f"price_per_hour must be >= 0, got {price_per_hour}")
    ok = [r for r in records if r.ok]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    itls = [gap for r in ok for gap in r.itls_s()]
    e2es = [r.end_s - r.start_s for r in ok if r.end_s is not None]
    input_tokens = sum(r.input_tokens for r in ok)
    output_tokens = sum(r.output_tokens for r in ok)
    reported = [r for r in ok if r.cached_tokens is not None]
    reported_input = sum(r.input_tokens for r in reported)
    hit_ratio = (sum(r.cached_tokens or 0 for r in reported) / reported_input) if reported_input else None
    total_tokens = input_tokens + output_tokens
    cost = price_per_hour * duration_s / 3600 / total_tokens * 1000 if total_tokens else None
    return Summary(
        requests_ok=len(ok),
        requests_failed=len(records) - len(ok),
        duration_s=duration_s,
        ttft_p50_ms=percentile_ms(ttfts, 50),
        ttft_p90_ms=percentile_ms(ttfts, 90),
        ttft_p99_ms=percentile_ms(ttfts, 99),
        ttft_mean_ms=float(np.mean(ttfts) * 1e3) if ttfts else None,
        itl_p50_ms=percentile_ms(itls, 50),
        itl_p90_ms=percentile_ms(itls, 90),
        e2e_p50_ms=percentile_ms(e2es, 50),
        e2e_p90_ms=percentile_ms(e2es, 90),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        input_tokens_per_s=input_tokens / duration_s,
        output_tokens_per_s=output_tokens / duration_s,
        requests_per_s=len(ok) / duration_s,
        cache_hit_ratio=hit_ratio,
        price_per_hour=price_per_hour,
        cost_per_1k_tokens=cost,
    )
