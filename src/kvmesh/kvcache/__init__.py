"""The tiered KV cache library: L1 (node CPU memory) over L2 (cluster-wide)."""
