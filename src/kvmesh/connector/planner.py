"""Scheduler-side bookkeeping of the connector: what to load and save each engine step.

Pure Python (no vLLM, no torch) so the decisions are unit-tested directly.

Token ranges of one request, in chunk units (``cs`` = chunk size)::

    0          num_computed            hit_end                   prompt end
    |--vLLM's own prefix cache--|--load from L1/L2--|--compute (prefill)--|
               (block aligned)     (whole chunks)

- A lookup starts at the chunk holding ``num_computed``: chunks before it are
  already in vLLM's blocks, whether or not L1/L2 still has them.
- The hit never covers the last prompt token: vLLM must compute at least one
  token to produce logits.
- Blocks of the first loaded chunk that vLLM already computed are skipped
  (``skip_blocks``): they may be shared with running requests.
- A chunk is saved in the step whose forward computes its last token, once.
  Chunks below the first hit end are not saved again: they came from a tier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kvmesh.common.hashing import ChainSpec, RequestExtras, prefix_hashes


@dataclass(frozen=True)
class LoadSpec:
    """Load chunks ``first_chunk ..`` of one request into its vLLM blocks."""

    req_id: str
    chain_hashes: tuple[bytes, ...]
    """Chain hashes of the chunks to load, in order."""
    first_chunk: int
    """Index of the first chunk in the request."""
    skip_blocks: int
    """Leading blocks of the first chunk that vLLM already holds (not written)."""
    block_ids: tuple[int, ...]
    """vLLM block ids of the loaded chunks, ``skip_blocks`` excluded."""
    l1_tokens: int = 0
    """Of the promised tokens, how many the lookup found in L1 (the rest in L2); for metrics."""


@dataclass(frozen=True)
class SaveSpec:
    """Save newly computed full chunks of one request."""

    req_id: str
    chain_hashes: tuple[bytes, ...]
    """Chain hashes of the chunks to save."""
    block_ids: tuple[int, ...]
    """vLLM block ids holding them (blocks_per_chunk per chunk)."""


@dataclass
class StepPlan:
    """Everything the worker side does in one engine step."""

    loads: list[LoadSpec] = field(default_factory=list)
    saves: list[SaveSpec] = field(default_factory=list)


@dataclass(frozen=True)
class Match:
    """The answer of one lookup, kept until vLLM allocates blocks for it."""

    num_computed: int
    """Tokens vLLM already had."""
    external_tokens: int
    """Tokens the connector promised to load."""
    chain_hashes: tuple[bytes, ...]
    """Hashes of the chunks to load."""
    first_chunk: int
    l1_chunks: int
    """Of those, how many L1 held (the rest came from L2)."""


@dataclass
class _Request:
    tokens: Callable[[], Sequence[int]]
    extras: RequestExtras
    saved_chunks: int | None = None
    """Chunks known to be in a tier; None until the request's first scheduled step."""
    hashes: list[bytes] = field(default_factory=list)


LookupFn = Callable[[list[bytes]], tuple[int, int]]
"""``hashes -> (l1_chunks, total_chunks)``: the contiguous run present from the first hash on."""


class ChunkPlanner:
    """Per-request chunk state between ``get_num_new_matched_tokens`` and ``request_finished``."""

    def __init__(self, spec: ChainSpec, block_size: int, min_hit_tokens: int) -> None:
        if block_size < 1 or spec.chunk_size % block_size:
            raise ValueError(
                f"chunk_size {spec.chunk_size} must be a multiple of block size {block_size}"
            )
        self.spec = spec
        self.block_size = block_size
        self.blocks_per_chunk = spec.chunk_size // block_size
        self.min_hit_tokens = min_hit_tokens
        self._matches: dict[str, Match] = {}
        self._pending_loads: dict[str, Match] = {}
        self._requests: dict[str, _Request] = {}

    @property
    def active_requests(self) -> int:
        """Requests with state (for leak checks)."""
        return len(self._requests)

    def match(
        self,
        req_id: str,
        tokens: Sequence[int],
        extras: RequestExtras,
        num_computed: int,
        lookup: LookupFn,
    ) -> int:
        """Tokens beyond ``num_computed`` that L1/L2 can supply (0 if not worth loading)."""
        cs = self.spec.chunk_size
        max_chunks = (len(tokens) - 1) // cs
        first = num_computed // cs
        if max_chunks <= first or num_computed % self.block_size:
            return 0
        hashes = prefix_hashes(tokens, self.spec, extras, max_chunks=max_chunks)[first:]
        l1_chunks, hit_chunks = lookup(hashes)
        external = (first + hit_chunks) * cs - num_computed
        if hit_chunks <= 0 or external < self.min_hit_tokens:
            self._matches.pop(req_id, None)
            return 0
        self._matches[req_id] = Match(
            num_computed, external, tuple(hashes[:hit_chunks]), first, min(l1_chunks, hit_chunks)
        )
        return external

    def allocated(
        self,
        req_id: str,
        tokens: Callable[[], Sequence[int]],
        extras: RequestExtras,
        num_external: int,
    ) -> Match | None:
        """vLLM allocated blocks; returns the match it accepted (None if it loads nothing)."""
        match = self._matches.pop(req_id, None)
        accepted = (
            match if match is not None and num_external == match.external_tokens > 0 else None
        )
        if accepted is not None:
            self._pending_loads[req_id] = accepted
        self._requests.setdefault(req_id, _Request(tokens, extras))
        return accepted

    def plan(
        self,
        req_id: str,
        block_ids: Sequence[int],
        computed_before: int,
        computed_after: int,
        plan: StepPlan,
    ) -> None:
        """Add one scheduled request's load and save work for this step to ``plan``.

        ``computed_before`` counts tokens in vLLM's blocks before the step
        (its prefix cache plus what this step loads); ``computed_after`` adds
        the tokens this step's forward pass computes.
        """
        match = self._pending_loads.pop(req_id, None)
        if match is not None:
            plan.loads.append(self._load_spec(req_id, match, block_ids))
        state = self._requests.get(req_id)
        if state is None:
            return
        if state.saved_chunks is None:
            # Chunks before this point came from vLLM's prefix cache or a tier: not saved again.
            state.saved_chunks = computed_before // self.spec.chunk_size
        tokens = state.tokens()
        full = min(computed_after, len(tokens)) // self.spec.chunk_size
        if full <= state.saved_chunks:
            return
        if len(state.hashes) < full:
            state.hashes = prefix_hashes(tokens, self.spec, state.extras, max_chunks=full)
        bpc = self.blocks_per_chunk
        lo, hi = state.saved_chunks, full
        if len(block_ids) < hi * bpc:
            return  # blocks not allocated yet (cannot happen for computed tokens); try next step
        plan.saves.append(
            SaveSpec(req_id, tuple(state.hashes[lo:hi]), tuple(block_ids[lo * bpc : hi * bpc]))
        )
        state.saved_chunks = hi

    def _load_spec(self, req_id: str, match: Match, block_ids: Sequence[int]) -> LoadSpec:
        start_block = match.num_computed // self.block_size
        end_block = (match.num_computed + match.external_tokens) // self.block_size
        skip = start_block - match.first_chunk * self.blocks_per_chunk
        l1_end = (match.first_chunk + match.l1_chunks) * self.spec.chunk_size
        l1_tokens = max(0, min(match.external_tokens, l1_end - match.num_computed))
        return LoadSpec(
            req_id,
            match.chain_hashes,
            match.first_chunk,
            skip,
            tuple(block_ids[start_block:end_block]),
            l1_tokens,
        )

    def finished(self, req_id: str) -> None:
        """Forget a request."""
        self._matches.pop(req_id, None)
        self._pending_loads.pop(req_id, None)
        self._requests.pop(req_id, None)
