"""Fixtures of the simulator's unit tests."""

from __future__ import annotations

import pytest

from kvmesh.sim.presets import SimPreset, get_preset


@pytest.fixture
def fast_preset() -> SimPreset:
    """Shaped like vllm-cpu-demo but quick: 1 ms decode steps, 1M tokens/s prefill."""
    return get_preset("vllm-cpu-demo").with_overrides(
        prefill_tokens_per_s=1e6, prefill_attn_s_per_token2=0.0, request_overhead_ms=1.0,
        decode_ms_per_token=1.0, kv_capacity_tokens=4096)
