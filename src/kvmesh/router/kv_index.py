"""kvaware's index: chain hash -> {endpoint: tiers}, fed by workers' KV events.

Layout: an ``OrderedDict`` in least-recently-touched order, mapping a 16-byte
chain hash to ``{endpoint_url: tier_bits}``, where ``tier_bits`` has bit 0 for
ENGINE, bit 1 for L1 and bit 2 for L2. A chunk can sit in several tiers of
one worker at once (engine and L1 after an offload), so eviction from one tier
keeps the others. When the index holds more than ``max_entries`` keys the
least recently touched go first: bounded memory, exported as entries and an
estimate in bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from kvmesh.common.kv_events import EventKind, KVEventBatch, Tier

TIER_BITS: dict[Tier, int] = {Tier.ENGINE: 1, Tier.L1: 2, Tier.L2: 4}
"""Bit of each tier in an entry's tier set."""

ENTRY_OVERHEAD_BYTES = 200
"""Estimated bytes of one key (bytes object, OrderedDict slot, inner dict)."""
HOLDER_OVERHEAD_BYTES = 100
"""Estimated bytes of one endpoint in an entry's inner dict."""


def best_tier(bits: int) -> Tier | None:
    """The fastest tier set in ``bits``."""
    for tier, bit in TIER_BITS.items():
        if bits & bit:
            return tier
    return None


class KVIndex:
    """Where each chunk lives, per endpoint; event-loop only."""

    def __init__(self, max_entries: int = 1 << 20) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, dict[str, int]] = OrderedDict()
        self._holders = 0
        self.evicted_entries = 0
        """Keys dropped because the index was full."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def num_bytes(self) -> int:
        """Estimated memory of the index."""
        return len(self._entries) * ENTRY_OVERHEAD_BYTES + self._holders * HOLDER_OVERHEAD_BYTES

    def apply(self, batch: KVEventBatch) -> None:
        """Apply one worker's batch, in order."""
        src = batch.source
        for event in batch.events:
            bit = TIER_BITS[event.tier]
            if event.kind is EventKind.ADMITTED:
                for h in event.chain_hashes:
                    self._admit(h, src, bit)
            elif event.kind is EventKind.EVICTED:
                for h in event.chain_hashes:
                    self._evict(h, src, bit)
            else:
                self.clear_source(src, bit)

    def _admit(self, key: bytes, src: str, bit: int) -> None:
        holders = self._entries.get(key)
        if holders is None:
            holders = self._entries[key] = {}
            if len(self._entries) > self.max_entries:
                _, old = self._entries.popitem(last=False)
                self._holders -= len(old)
                self.evicted_entries += 1
        else:
            self._entries.move_to_end(key)
        if src not in holders:
            self._holders += 1
        holders[src] = holders.get(src, 0) | bit

    def _evict(self, key: bytes, src: str, bit: int) -> None:
        holders = self._entries.get(key)
        if holders is None or src not in holders:
            return
        left = holders[src] & ~bit
        if left:
            holders[src] = left
            return
        del holders[src]
        self._holders -= 1
        if not holders:
            del self._entries[key]

    def clear_source(self, src: str, bits: int = 7) -> None:
        """Forget ``src``'s chunks in the tiers of ``bits`` (all by default). O(entries)."""
        for key in list(self._entries):
            self._evict(key, src, bits)

    def lookup(self, hashes: Sequence[bytes]) -> list[dict[str, int]]:
        """Holders of each chunk in order, stopping at the first chunk nobody holds.

        Only a contiguous prefix from chunk 0 can be reused, so later chunks
        never matter. Touches the found keys (LRU).
        """
        out: list[dict[str, int]] = []
        entries = self._entries
        for h in hashes:
            holders = entries.get(h)
            if not holders:
                break
            entries.move_to_end(h)
            out.append(holders)
        return out
