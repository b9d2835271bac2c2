"""A bounded, LRU-trimmed, byte-accounted radix tree over routing text.

It answers two questions for ``prefixaware``:

- which endpoints hold (have recently served) the longest prefix of this text,
  and how long that prefix is per endpoint;
- whether this text *extends a whole earlier request* (turn N+1 of a
  conversation extends turn N), and which endpoints served that request.

Shape: a compressed trie. Each node owns an edge label (a ``str`` slice of the
text), children keyed by the first character of their label, the set of
endpoints that served a request passing through it, and the set of endpoints
that served a request *ending* exactly at it::

    root ─ "<|system|>\\nYou are…" ─┬─ "<|user|>\\nhi…"   owners {A}  ends {A}
                                    └─ "<|user|>\\nyo…"   owners {B}  ends {B}

Memory is bounded by ``max_bytes``; the estimate per node is its label length
(characters, ~bytes for ASCII) plus :data:`NODE_OVERHEAD_BYTES`. When an insert
goes over budget, least recently used leaves are removed until the tree is at
90 % of the budget, so trimming is amortised over many inserts.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

NODE_OVERHEAD_BYTES = 240
"""Estimated fixed cost of a node (object, dicts, sets) beyond its label."""

TRIM_TARGET = 0.9
"""Trim to this fraction of the budget, so trims are rare."""


class _Node:
    __slots__ = ("label", "children", "parent", "owners", "ends", "tick")

    def __init__(self, label: str, parent: _Node | None) -> None:
        self.label = label
        self.children: dict[str, _Node] = {}
        self.parent = parent
        self.owners: set[str] = set()
        self.ends: set[str] = set()
        self.tick = 0


@dataclass(frozen=True)
class PrefixMatch:
    """What the tree knows about one text."""

    matched_chars: dict[str, int]
    """Endpoint -> characters of the text it holds as a prefix (only endpoints with > 0)."""
    extends: frozenset[str]
    """Endpoints that served an earlier request whose whole text is a prefix of this one."""
    extended_chars: int
    """Length of that earlier request's text (0 when ``extends`` is empty)."""


def _common_prefix_len(a: str, b: str, start: int) -> int:
    """Length of the common prefix of ``a`` and ``b[start:]`` (without copying b)."""
    n = min(len(a), len(b) - start)
    if b.startswith(a[:n], start):
        return n
    lo, hi = 0, n  # binary search on startswith: O(log n) C-speed compares
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if b.startswith(a[:mid], start):
            lo = mid
        else:
            hi = mid - 1
    return lo


class RadixTree:
    """The prefix structure of ``prefixaware``; not thread-safe (event loop only)."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        if max_bytes < NODE_OVERHEAD_BYTES:
            raise ValueError(f"max_bytes must be >= {NODE_OVERHEAD_BYTES}, got {max_bytes}")
        self.max_bytes = max_bytes
        self._root = _Node("", None)
        self._tick = 0
        self.num_nodes = 1
        self.num_bytes = NODE_OVERHEAD_BYTES
        self.trimmed_nodes = 0
        """Nodes removed by LRU trimming since creation."""

    def match(self, text: str) -> PrefixMatch:
        """Longest-prefix information for ``text``; does not change recency."""
        matched: dict[str, int] = {}
        extends: frozenset[str] = frozenset()
        extended = 0
        node, pos = self._root, 0
        while pos < len(text):
            child = node.children.get(text[pos])
            if child is None:
                break
            common = _common_prefix_len(child.label, text, pos)
            for ep in child.owners:
                matched[ep] = pos + common
            if common < len(child.label):
                break
            pos += common
            node = child
            if child.ends:
                extends, extended = frozenset(child.ends), pos
        return PrefixMatch(matched, extends, extended)

    def insert(self, text: str, endpoint: str) -> None:
        """Record that ``endpoint`` served a request whose routing text is ``text``."""
        if not text:
            return
        self._tick += 1
        tick = self._tick
        node, pos = self._root, 0
        while pos < len(text):
            child = node.children.get(text[pos])
            if child is None:
                child = self._add_child(node, text[pos:])
                pos = len(text)
            else:
                common = _common_prefix_len(child.label, text, pos)
                if common < len(child.label):
                    child = self._split(child, common)
                pos += common
            child.owners.add(endpoint)
            child.tick = tick
            node = child
        node.ends.add(endpoint)
        if self.num_bytes > self.max_bytes:
            self.trim(int(self.max_bytes * TRIM_TARGET))

    def remove_endpoint(self, endpoint: str) -> None:
        """Forget an endpoint everywhere (it left discovery); prunes emptied nodes."""
        stack = list(self._root.children.values())
        emptied: list[_Node] = []
        while stack:
            node = stack.pop()
            node.owners.discard(endpoint)
            node.ends.discard(endpoint)
            if not node.owners:
                emptied.append(node)
            else:
                stack.extend(node.children.values())
        for node in emptied:  # a node without owners has none below it either
            self._drop_subtree(node)

    def trim(self, target_bytes: int) -> None:
        """Remove least recently used leaves until ``num_bytes <= target_bytes``."""
        heap = [(n.tick, id(n), n) for n in self._leaves()]
        heapq.heapify(heap)
        while heap and self.num_bytes > target_bytes:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            self._drop_subtree(leaf)
            self.trimmed_nodes += 1
            if parent is not None and parent is not self._root and not parent.children:
                heapq.heappush(heap, (parent.tick, id(parent), parent))

    def _leaves(self) -> list[_Node]:
        out, stack = [], list(self._root.children.values())
        while stack:
            node = stack.pop()
            if node.children:
                stack.extend(node.children.values())
            else:
                out.append(node)
        return out

    def _add_child(self, parent: _Node, label: str) -> _Node:
        child = _Node(label, parent)
        parent.children[label[0]] = child
        self.num_nodes += 1
        self.num_bytes += NODE_OVERHEAD_BYTES + len(label)
        return child

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut ``node``'s edge at ``at``; returns the new upper node (same owners)."""
        parent = node.parent
        assert parent is not None  # the root is never split
        upper = _Node(node.label[:at], parent)
        upper.owners = set(node.owners)
        upper.tick = node.tick
        parent.children[upper.label[0]] = upper
        node.label = node.label[at:]
        node.parent = upper
        upper.children[node.label[0]] = node
        self.num_nodes += 1
        self.num_bytes += NODE_OVERHEAD_BYTES
        return upper

    def _drop_subtree(self, node: _Node) -> None:
        parent = node.parent
        if parent is None or parent.children.get(node.label[0]) is not node:
            return  # already detached with an ancestor
        del parent.children[node.label[0]]
        stack = [node]
        while stack:
            cur = stack.pop()
            self.num_nodes -= 1
            self.num_bytes -= NODE_OVERHEAD_BYTES + len(cur.label)
            stack.extend(cur.children.values())
