from __future__ import annotations

import pytest

from kvmesh.router.radix_tree import NODE_OVERHEAD_BYTES, PrefixMatch, RadixTree


def test_match_reports_per_endpoint_prefix_and_extension() -> None:
    tree = RadixTree()
    tree.insert("system:hello", "A")
    tree.insert("system:howdy", "B")
    assert tree.match("system:hello world") == PrefixMatch({"A": 12, "B": 8}, frozenset({"A"}), 12)
    assert tree.match("system:hi") == PrefixMatch({"A": 8, "B": 8}, frozenset(), 0)
    assert tree.match("other") == PrefixMatch({}, frozenset(), 0)
    # 3 labelled nodes + root: "system:h" split into "ello" and "owdy"
    assert tree.num_nodes == 4
    assert tree.num_bytes == 4 * NODE_OVERHEAD_BYTES + len("system:h") + len("ello") + len("owdy")


def test_deepest_extended_request_wins() -> None:
    tree = RadixTree()
    tree.insert("t1", "A")
    tree.insert("t1t2", "B")
    assert tree.match("t1t2t3") == PrefixMatch({"A": 2, "B": 4}, frozenset({"B"}), 4)
    assert tree.match("t1x").extends == frozenset({"A"})


def test_lru_trim_keeps_budget_and_recent_entries() -> None:
    budget = 10 * (NODE_OVERHEAD_BYTES + 8)
    tree = RadixTree(max_bytes=budget)
    for i in range(50):
        tree.insert(f"conv{i:04d}", f"E{i % 3}")
        assert tree.num_bytes <= budget
    assert tree.trimmed_nodes > 0
    assert tree.match("conv0049").extends == frozenset({"E1"})
    assert tree.match("conv0000").extends == frozenset()


def test_remove_endpoint_prunes_only_its_nodes() -> None:
    tree = RadixTree()
    tree.insert("shared-a", "A")
    tree.insert("shared-b", "B")
    tree.remove_endpoint("A")
    assert tree.match("shared-a") == PrefixMatch({"B": 7}, frozenset(), 0)
    assert tree.num_nodes == 3  # root, "shared-", "b"


def test_budget_must_fit_a_node() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        RadixTree(max_bytes=10)
