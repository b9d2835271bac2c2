"""The kvmesh L2 tiered storage server (memory + disk tiers, shared memory) and its client."""
