"""The simulator's latency model: pure functions of a :class:`SimPreset`.

Kept free of I/O and clocks so it is unit-tested exactly, and so the engine
loop only has to add the numbers up.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmesh.sim.presets import SimPreset


@dataclass(frozen=True)
class CostModel:
    """Seconds for prefill, decode and KV restores under one preset."""

    preset: SimPreset

    def prefill_s(self, start_token: int, end_token: int) -> float:
        """Time to compute KV for prompt tokens ``[start_token, end_token)``.

        Tokens before ``start_token`` are cached: they cost nothing to compute,
        but the new tokens still attend to them, hence ``end^2 - start^2``.
        """
        if not 0 <= start_token <= end_token:
            raise ValueError(f"need 0 <= start_token <= end_token, got {start_token}, {end_token}")
        new_tokens = end_token - start_token
        linear = new_tokens / self.preset.prefill_tokens_per_s
        attention = self.preset.prefill_attn_s_per_token2 * (end_token**2 - start_token**2)
        return linear + attention

    def decode_step_s(self, batch_size: int) -> float:
        """One decode step producing one token for each of ``batch_size`` sequences."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        p = self.preset
        return (p.decode_ms_per_token + p.decode_ms_per_extra_seq * (batch_size - 1)) / 1e3

    def load_s(self, l1_tokens: int, l2_tokens: int) -> float:
        """Time to restore KV for tokens found in L1 and in L2 (never worse than recompute is
        the cache library's job: it skips hits that would be)."""
        if l1_tokens < 0 or l2_tokens < 0:
            raise ValueError("token counts must be >= 0")
        p = self.preset
        l1 = l1_tokens * p.kv_bytes_per_token / (p.l1_load_gb_per_s * 1e9)
        l2 = l2_tokens * p.kv_bytes_per_token / (p.l2_load_gb_per_s * 1e9)
        return l1 + l2

    @property
    def overhead_s(self) -> float:
        """Fixed per-request scheduling cost."""
        return self.preset.request_overhead_ms / 1e3

    def ttft_s(self, prompt_tokens: int, cached_tokens: int) -> float:
        """TTFT of a lone request on an idle engine: the first token comes out of the
        step that finishes the prefill (for docs and tests)."""
        return self.overhead_s + self.prefill_s(cached_tokens, prompt_tokens)
