from __future__ import annotations

import pytest

from kvmesh.sim.cost_model import CostModel
from kvmesh.sim.presets import PRESETS, SimPreset, get_preset


def _preset(**overrides: float) -> SimPreset:
    base = dict(
        name="t", prefill_tokens_per_s=1000.0, prefill_attn_s_per_token2=1e-6, request_overhead_ms=10.0,
        decode_ms_per_token=5.0, decode_ms_per_extra_seq=0.5, kv_capacity_tokens=4096, max_batch=4,
        max_prefill_tokens_per_step=512, kv_bytes_per_token=1000, l1_load_gb_per_s=1.0,
        l2_load_gb_per_s=0.5, source="test",
    )
    base.update(overrides)
    return SimPreset(**base)  # type: ignore[arg-type]


def test_prefill_charges_only_uncached_tokens_plus_attention() -> None:
    cost = CostModel(_preset())
    # 100 new tokens after 300 cached: 100/1000 s linear + 1e-6 * (400^2 - 300^2) attention.
    assert cost.prefill_s(300, 400) == pytest.approx(0.1 + 1e-6 * (160_000 - 90_000))
    assert cost.prefill_s(400, 400) == 0.0
    assert cost.prefill_s(0, 400) > cost.prefill_s(300, 400)


def test_decode_step_grows_with_batch() -> None:
    cost = CostModel(_preset())
    assert cost.decode_step_s(1) == pytest.approx(0.005)
    assert cost.decode_step_s(9) == pytest.approx(0.009)


def test_load_time_uses_each_tier_bandwidth() -> None:
    cost = CostModel(_preset())
    # 1e6 bytes from L1 at 1 GB/s + 2e6 bytes from L2 at 0.5 GB/s.
    assert cost.load_s(1000, 2000) == pytest.approx(0.001 + 0.004)


def test_ttft_of_a_lone_request() -> None:
    cost = CostModel(_preset())
    assert cost.ttft_s(400, 300) == pytest.approx(0.01 + cost.prefill_s(300, 400))


@pytest.mark.parametrize(
    ("call", "args"),
    [("prefill_s", (5, 4)), ("prefill_s", (-1, 4)), ("decode_step_s", (0,)), ("load_s", (-1, 0))],
)
def test_misuse_raises(call: str, args: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        getattr(CostModel(_preset()), call)(*args)


def test_vllm_cpu_demo_matches_the_measurements_it_was_fitted_to() -> None:
    cost = CostModel(get_preset("vllm-cpu-demo"))
    # Measured on the dev machines: 0.45 s for 1K, 3.2 s for 4K, 9.8 s for 8K (within 7 %).
    for tokens, measured_s in ((1024, 0.45), (4096, 3.2), (8192, 9.8)):
        assert cost.ttft_s(tokens, 0) == pytest.approx(measured_s, rel=0.07)
    # 10.6 ms per token alone; about 500 tokens/s at batch 8.
    assert cost.decode_step_s(1) == pytest.approx(0.0106)
    assert 8 / cost.decode_step_s(8) == pytest.approx(500, rel=0.05)


def test_presets_are_registered_and_validated() -> None:
    assert sorted(PRESETS) == ["h100-llama70b", "h100-llama8b", "vllm-cpu-demo"]
    assert all(PRESETS[name].name == name and PRESETS[name].source for name in PRESETS)
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        get_preset("nope")
    with pytest.raises(ValueError, match="max_batch must be > 0"):
        _preset(max_batch=0)
    assert get_preset("vllm-cpu-demo").with_overrides(max_batch=3, decode_ms_per_token=None).max_batch == 3


def test_h100_70b_derivation() -> None:
    p = get_preset("h100-llama70b")
    assert p.kv_bytes_per_token == 80 * 8 * 128 * 2 * 2  # 320 KiB per token
    # 141 GB of weights over 8 x 3.35 TB/s at 70 % -> about 7.5 ms per decode step.
    assert p.decode_ms_per_token == pytest.approx(70.6e9 * 2 / (8 * 3.35e12 * 0.7) * 1e3)
