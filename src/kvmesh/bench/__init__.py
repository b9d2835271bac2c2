"""Benchmarks: cache, store, TTFT, router, load generator and side-by-side fleets."""
