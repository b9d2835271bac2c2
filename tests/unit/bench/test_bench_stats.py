from __future__ import annotations

import pytest

from kvmesh.bench.stats import RequestRecord, percentile_ms, summarize


def _record(i: int, ttft_s: float, chunk_gaps: list[float], *, error: str | None = None,
            cached: int | None = None) -> RequestRecord:
    start = 100.0 + i
    times = [start + ttft_s]
    for gap in chunk_gaps:
        times.append(times[-1] + gap)
    return RequestRecord(conv_id=f"c{i}", turn=0, start_s=start, ttft_s=None if error else ttft_s,
                         chunk_times_s=times, end_s=times[-1], input_tokens=100, output_tokens=len(times),
                         cached_tokens=cached, error=error)


def test_percentiles_interpolate_linearly() -> None:
    assert percentile_ms([0.1, 0.2, 0.3, 0.4, 0.5], 50) == pytest.approx(300.0)
    assert percentile_ms([0.1, 0.2, 0.3, 0.4, 0.5], 90) == pytest.approx(460.0)
    assert percentile_ms([], 50) is None


def test_summary_counts_only_successes() -> None:
    records = [_record(i, ttft, [0.01, 0.03], cached=50) for i, ttft in enumerate([0.1, 0.2, 0.3, 0.4, 0.5])]
    records.append(_record(9, 0.0, [], error="HTTP 500"))
    s = summarize(records, duration_s=100.0, price_per_hour=3.6)
    assert (s.requests_ok, s.requests_failed) == (5, 1)
    assert s.ttft_p50_ms == pytest.approx(300.0)
    assert s.ttft_p99_ms == pytest.approx(496.0)
    assert s.itl_p50_ms == pytest.approx(20.0)  # gaps 10 ms and 30 ms, five times each
    assert s.e2e_p50_ms == pytest.approx(340.0)
    assert (s.input_tokens, s.output_tokens) == (500, 15)
    assert s.output_tokens_per_s == pytest.approx(0.15)
    assert s.cache_hit_ratio == pytest.approx(0.5)
    # 3.6 USD/h for 100 s = 0.1 USD over 515 tokens.
    assert s.cost_per_1k_tokens == pytest.approx(0.1 / 515 * 1000)
    assert set(s.to_dict()) >= {"ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "itl_p50_ms",
                                "output_tokens_per_s", "requests_ok", "requests_failed", "cost_per_1k_tokens"}


def test_empty_run_has_no_latencies_and_no_cost() -> None:
    s = summarize([_record(0, 0.0, [], error="refused")], duration_s=1.0, price_per_hour=1.0)
    assert (s.requests_ok, s.ttft_p50_ms, s.cost_per_1k_tokens, s.cache_hit_ratio) == (0, None, None, None)


@pytest.mark.parametrize(("duration", "price"), [(0.0, 1.0), (1.0, -1.0)])
def test_bad_inputs_raise(duration: float, price: float) -> None:
    with pytest.raises(ValueError):
        summarize([], duration_s=duration, price_per_hour=price)
