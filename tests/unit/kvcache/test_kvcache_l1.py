"""Eviction policies and the L1 memory tier: exact orders, pins, the hard budget."""

from __future__ import annotations

import threading
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kvmesh.kvcache.chunk import KVChunk
from kvmesh.kvcache.eviction import POLICIES, FIFOPolicy, LFUPolicy, LRUPolicy, make_policy
from kvmesh.kvcache.l1 import EvictedEntry, MemoryTier, PutResult, PutStatus
from kvmesh.kvcache.serde import HEADER_SIZE

PAYLOAD = 100
ENTRY = HEADER_SIZE + PAYLOAD  # bytes one test entry occupies


def _chunk(fill: int = 0, size: int = PAYLOAD) -> KVChunk:
    return KVChunk.from_buffer("uint8", (size,), bytes([fill % 256]) * size)


def _key(i: int) -> bytes:
    return i.to_bytes(16, "big")


def _drain(policy_name: str, inserts: list[int], reads: list[int]) -> list[int]:
    """Insert, read, then evict everything: the full eviction order."""
    policy = make_policy(policy_name)
    for k in inserts:
        policy.inserted(k)
    for k in reads:
        policy.accessed(k)
    order = []
    while (victim := policy.victim(lambda _k: False)) is not None:
        order.append(victim)
        policy.removed(victim)
    return order


@pytest.mark.parametrize(
    ("name", "reads", "expected"),
    [
        # last reads: 4, 3, 2, 1 -> least recently used first
        ("lru", [3, 4, 3, 2, 1], [4, 3, 2, 1]),
        # reads do not matter
        ("fifo", [3, 4, 3, 2, 1], [1, 2, 3, 4]),
        # counts (insert = 1): 1->2, 2->3, 3->3, 4->2; ties by insertion order
        ("lfu", [3, 3, 1, 2, 2, 4], [1, 4, 2, 3]),
    ],
)
def test_exact_eviction_order(name: str, reads: list[int], expected: list[int]) -> None:
    assert _drain(name, [1, 2, 3, 4], reads) == expected


def test_lfu_ties_go_to_the_oldest_insertion() -> None:
    assert _drain("lfu", [5, 6, 7, 8], []) == [5, 6, 7, 8]
    assert _drain("lfu", [5, 6, 7, 8], [5, 6]) == [7, 8, 5, 6]


def test_lfu_heap_stays_bounded_under_many_reads() -> None:
    policy = LFUPolicy()
    for k in range(10):
        policy.inserted(k)
    for _ in range(1000):
        policy.accessed(3)
    assert len(policy._heap) <= 2 * len(policy) + 65
    assert _drain_policy(policy)[-1] == 3


def _drain_policy(policy: LFUPolicy) -> list[int]:
    order = []
    while (victim := policy.victim(lambda _k: False)) is not None:
        order.append(victim)
        policy.removed(victim)
    return order


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_victim_skips_pinned_keys_without_losing_them(name: str) -> None:
    policy = make_policy(name)
    for k in (1, 2, 3):
        policy.inserted(k)
    assert policy.victim(lambda k: k in (1, 2)) == 3
    assert policy.victim(lambda _k: True) is None
    assert policy.victim(lambda _k: False) == 1
    assert len(policy) == 3


def test_policy_registry() -> None:
    assert POLICIES == {"lru": LRUPolicy, "lfu": LFUPolicy, "fifo": FIFOPolicy}
    assert make_policy("LRU").name == "lru"
    with pytest.raises(
        ValueError, match=r"unknown eviction policy 'arc'; choose one of \['fifo', 'lfu', 'lru'\]"
    ):
        make_policy("arc")


# ---- MemoryTier -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "evicted"),
    # after puts 0,1,2 and reads 0,2,0, then puts 3 and 4:
    # lru: 1 is least recent, then 2; fifo: 0, 1; lfu: 1 (count 1), then 3 (new, count 1)
    [("lru", [1, 2]), ("fifo", [0, 1]), ("lfu", [1, 3])],
)
def test_tier_evicts_in_policy_order(name: str, evicted: list[int]) -> None:
    seen: list[EvictedEntry] = []
    tier = MemoryTier(3 * ENTRY, name, on_evict=seen.extend)
    for i in range(3):
        assert tier.put(_key(i), _chunk(i), tag=f"h{i}").status is PutStatus.INSERTED
    with tier.pinned([_key(0)]):  # a read of 0
        pass
    with tier.pinned([_key(2)]):
        pass
    with tier.pinned([_key(0)]):
        pass
    assert tier.put(_key(3), _chunk(3), tag="h3").status is PutStatus.INSERTED
    assert tier.put(_key(4), _chunk(4), tag="h4").status is PutStatus.INSERTED
    assert [e.key for e in seen] == [_key(i) for i in evicted]
    assert [e.tag for e in seen] == [f"h{i}" for i in evicted]
    assert tier.used_bytes == 3 * ENTRY and tier.num_entries == 3
    assert tier.counters.evictions == 2


def test_pinned_entries_survive_eviction_and_their_bytes_stay_valid() -> None:
    tier = MemoryTier(2 * ENTRY, "fifo")
    tier.put(_key(0), _chunk(7))
    tier.put(_key(1), _chunk(8))
    with tier.pinned([_key(0)]) as chunks:
        assert (
            tier.put(_key(2), _chunk(9)).status is PutStatus.INSERTED
        )  # evicts 1, the only unpinned entry
        assert tier.keys() == [_key(0), _key(2)]
        assert tier.put(_key(3), _chunk(1)).status is PutStatus.INSERTED  # 2 is evictable
        assert tier.keys() == [_key(0), _key(3)]
        assert bytes(chunks[0].data) == bytes([7]) * PAYLOAD
    assert tier.counters.rejected_pinned == 0


def test_put_refused_when_pins_leave_no_room() -> None:
    tier = MemoryTier(2 * ENTRY, "lru")
    tier.put(_key(0), _chunk())
    tier.put(_key(1), _chunk())
    with tier.pinned([_key(0), _key(1)]) as chunks:
        assert len(chunks) == 2
        assert tier.put(_key(2), _chunk()).status is PutStatus.REJECTED
        assert tier.keys() == [_key(0), _key(1)]  # nothing was evicted trying
    assert tier.counters.rejected_pinned == 1
    assert tier.put(_key(2), _chunk()).status is PutStatus.INSERTED


def test_too_large_entry_refused_and_counted() -> None:
    tier = MemoryTier(ENTRY, "lru")
    assert tier.put(_key(0), _chunk(size=PAYLOAD + 1)).status is PutStatus.REJECTED
    assert tier.counters.rejected_too_large == 1 and tier.used_bytes == 0
    assert tier.put(_key(1), _chunk()).status is PutStatus.INSERTED
    assert tier.used_bytes == ENTRY == tier.capacity_bytes


def test_pinned_yields_only_the_leading_run_and_unpins() -> None:
    tier = MemoryTier(10 * ENTRY)
    for i in (0, 1, 3):
        tier.put(_key(i), _chunk(i))
    with tier.pinned([_key(0), _key(1), _key(2), _key(3)]) as chunks:
        assert [c.data[0] for c in chunks] == [0, 1]
        assert not tier.remove(_key(0))  # pinned
    assert tier.exists_prefix([_key(0), _key(1), _key(2), _key(3)]) == 2
    assert tier.remove(_key(0)) and not tier.contains(_key(0))
    assert tier.clear() == 2 and tier.used_bytes == 0


def test_existing_key_is_kept_not_rewritten() -> None:
    tier = MemoryTier(10 * ENTRY)
    assert tier.put(_key(0), _chunk(1)).status is PutStatus.INSERTED
    assert tier.put(_key(0), _chunk(2)).status is PutStatus.PRESENT
    with tier.pinned([_key(0)]) as (chunk,):
        assert chunk.data[0] == 1
    assert tier.num_entries == 1 and tier.used_bytes == ENTRY


def test_negative_capacity_and_unknown_policy_rejected() -> None:
    with pytest.raises(ValueError, match="capacity_bytes must be >= 0"):
        MemoryTier(-1)
    with pytest.raises(ValueError, match="unknown eviction policy"):
        MemoryTier(10, "random")


def test_concurrent_writers_and_readers_respect_the_budget() -> None:
    tier = MemoryTier(20 * ENTRY, "lru")
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(300):
                key = _key(offset * 1000 + i % 40)
                tier.put(key, _chunk(i))
                with tier.pinned([key]) as chunks:
                    for c in chunks:
                        assert c.nbytes == PAYLOAD
                assert tier.used_bytes <= tier.capacity_bytes
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert tier.used_bytes == tier.num_entries * ENTRY <= tier.capacity_bytes


class TierMachine(RuleBasedStateMachine):
    """Random puts (of varied sizes), pins, unpins and removes never break the budget."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = "lru"
        self.tier = MemoryTier(1000)
        self.sizes: dict[bytes, int] = {}
        self.pins: list = []

    @rule(policy=st.sampled_from(sorted(POLICIES)))
    @precondition(lambda self: self.tier.num_entries == 0 and not self.pins)
    def choose_policy(self, policy: str) -> None:
        self.tier = MemoryTier(1000, policy)

    @rule(k=st.integers(0, 30), size=st.integers(0, 1100))
    def put(self, k: int, size: int) -> None:
        was_present = self.tier.contains(_key(k))
        ok = self.tier.put(_key(k), _chunk(k, size)).status is not PutStatus.REJECTED
        if ok and not was_present:
            self.sizes[_key(k)] = HEADER_SIZE + size
        if HEADER_SIZE + size > 1000:
            assert ok == was_present  # too large: refused, unless the key was already there

    @rule(ks=st.lists(st.integers(0, 30), max_size=4))
    def pin(self, ks: list[int]) -> None:
        cm = self.tier.pinned([_key(k) for k in ks])
        cm.__enter__()
        self.pins.append(cm)

    @rule()
    @precondition(lambda self: bool(self.pins))
    def unpin(self) -> None:
        self.pins.pop().__exit__(None, None, None)

    @rule(k=st.integers(0, 30))
    def remove(self, k: int) -> None:
        self.tier.remove(_key(k))

    @invariant()
    def budget_is_never_exceeded(self) -> None:
        assert 0 <= self.tier.used_bytes <= self.tier.capacity_bytes
        present = self.tier.keys()
        assert self.tier.used_bytes == sum(self.sizes[k] for k in present)

    def teardown(self) -> None:
        while self.pins:
            self.pins.pop().__exit__(None, None, None)


TestTierBudgetProperty = TierMachine.TestCase
TestTierBudgetProperty.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


class _Reference:
    """A slow, obviously-correct model of the three policies."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.clock = 0
        self.keys: dict[int, list[int]] = {}  # key -> [insert time, last touch, count]

    def insert(self, k: int) -> None:
        self.clock += 1
        self.keys[k] = [self.clock, self.clock, 1]

    def access(self, k: int) -> None:
        self.clock += 1
        self.keys[k][1] = self.clock
        self.keys[k][2] += 1

    def victim(self) -> int | None:
        if not self.keys:
            return None
        rank = {
            "lru": lambda k: self.keys[k][1],
            "fifo": lambda k: self.keys[k][0],
            "lfu": lambda k: (self.keys[k][2], self.keys[k][0]),
        }[self.name]
        return min(self.keys, key=rank)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(POLICIES)),
    ops=st.lists(
        st.tuples(st.sampled_from(["ins", "acc", "evict"]), st.integers(0, 12)), max_size=80
    ),
)
def test_policies_match_reference_model(name: str, ops: list[tuple[str, int]]) -> None:
    policy, ref = make_policy(name), _Reference(name)
    for op, k in ops:
        if op == "ins" and k not in ref.keys:
            policy.inserted(k)
            ref.insert(k)
        elif op == "acc" and k in ref.keys:
            policy.accessed(k)
            ref.access(k)
        elif op == "evict":
            victim = policy.victim(lambda _k: False)
            assert victim == ref.victim()
            if victim is not None:
                policy.removed(victim)
                del ref.keys[victim]
    assert len(policy) == len(ref.keys)


# ---- buffer recycling -------------------------------------------------------------


def _buffer_ref(result: PutResult) -> weakref.ref:
    # A weak reference is not a holder: it cannot stop a reuse.
    return weakref.ref(result.frame.buffer)


def test_put_reuses_the_buffer_it_evicted() -> None:
    tier = MemoryTier(ENTRY, "fifo")
    first = _buffer_ref(tier.put(_key(0), _chunk(1)))
    second = tier.put(_key(1), _chunk(2))
    assert second.status is PutStatus.INSERTED and second.frame.buffer is first()
    with tier.pinned([_key(1)]) as (chunk,):
        assert bytes(chunk.data) == bytes([2]) * PAYLOAD


@pytest.mark.parametrize("holder", ["chunk", "view", "lease", "off", "size"])
def test_buffers_still_held_elsewhere_are_never_reused(holder: str) -> None:
    tier = MemoryTier(2 * ENTRY + 10, "fifo", recycle=holder != "off")
    put = tier.put(_key(0), _chunk(1), lease=holder == "lease")
    first = _buffer_ref(put)
    kept: list[object] = []
    with tier.pinned([_key(0)]) as (chunk,):
        if holder == "chunk":
            kept.append(chunk)  # a reader breaking the contract: keeps the chunk past its block
        elif holder == "view":
            kept.append(chunk.data)  # e.g. torch.frombuffer holds the memoryview
    del chunk, put
    tier.put(_key(1), _chunk(2, size=PAYLOAD + 10 if holder == "size" else PAYLOAD))
    third = tier.put(_key(2), _chunk(3, size=PAYLOAD + 10 if holder == "size" else PAYLOAD))
    assert third.status is PutStatus.INSERTED and third.frame.buffer is not first()
    if kept:
        assert (
            bytes(memoryview(kept[0].data if holder == "chunk" else kept[0]))
            == bytes([1]) * PAYLOAD
        )  # type: ignore[attr-defined]


def test_concurrent_puts_with_recycling_keep_every_entry_intact() -> None:
    tier = MemoryTier(8 * ENTRY, "lru")
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(400):
                k = offset * 1000 + i % 30
                tier.put(_key(k), _chunk(k))
                with tier.pinned([_key(k)]) as chunks:
                    for c in chunks:  # whatever is read must be exactly what was put
                        assert bytes(c.data) == bytes([k % 256]) * PAYLOAD
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert tier.used_bytes == tier.num_entries * ENTRY <= tier.capacity_bytes
