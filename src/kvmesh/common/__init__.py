"""Pieces shared by every subsystem: the chunk-hash chain, KV events, errors, units."""
