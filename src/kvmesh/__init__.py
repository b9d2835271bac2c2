"""kvmesh: tiered KV cache and cache-aware routing for LLM inference fleets."""

__version__ = "0.1.0"
