"""Sim workers restore prefixes from the real cache library's L1 (and report the tier)."""

from __future__ import annotations

import aiohttp

from kvmesh.sim.config import SimConfig
from kvmesh.sim.presets import SimPreset
from kvmesh.sim.worker import SimWorker, placeholder_l1_bytes


async def _cached(url: str, tokens: list[int]) -> int:
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/completions",
                                                    json={"prompt": tokens, "max_tokens": 1}) as r:
        return (await r.json())["usage"]["prompt_tokens_details"]["cached_tokens"]


async def _evict_then_repeat(preset: SimPreset) -> tuple[int, str]:
    """Cached tokens of a prompt after another prompt pushed it out of the engine, and /metrics."""
    w = await SimWorker(SimConfig(preset=preset, port=0, chunk_size=64, block_size=16,
                                  l1_size_bytes=64 << 20)).start()
    try:
        first, other = list(range(1, 301)), list(range(1001, 1301))
        assert await _cached(w.url, first) == 0
        assert await _cached(w.url, other) == 0  # evicts `first` from the engine
        cached = await _cached(w.url, first)
        async with aiohttp.ClientSession() as s, s.get(w.url + "/metrics") as r:
            return cached, await r.text()
    finally:
        await w.stop()


async def test_prefix_evicted_from_engine_comes_back_from_l1(fast_preset: SimPreset) -> None:
    # The engine holds one prompt only; L1 restores far faster than the prefill.
    preset = fast_preset.with_overrides(kv_capacity_tokens=320, l1_load_gb_per_s=1000.0)
    cached, text = await _evict_then_repeat(preset)
    # 4 full 64-token chunks come back from L1 (the 300th token is recomputed).
    assert cached == 256
    assert 'kvmesh_sim_cached_tokens_total{tier="l1"} 256.0' in text
    assert "kvmesh_cache_" in text  # the cache library's own series share the registry


async def test_a_restore_slower_than_recompute_is_skipped(fast_preset: SimPreset) -> None:
    preset = fast_preset.with_overrides(kv_capacity_tokens=320, l1_load_gb_per_s=0.001)
    cached, text = await _evict_then_repeat(preset)
    assert cached == 0
    assert 'kvmesh_sim_cached_tokens_total{tier="l1"} 0.0' in text


def test_l1_budget_is_scaled_to_placeholder_chunks(fast_preset: SimPreset) -> None:
    config = SimConfig(preset=fast_preset, chunk_size=64, block_size=16, l1_size_bytes=10 * 8192 * 64)
    # 10 real chunks of 512 KiB -> 10 placeholder frames of 64 + 256 bytes.
    assert placeholder_l1_bytes(config, header_bytes=64) == 10 * (64 + 256)
