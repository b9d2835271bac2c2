"""ChunkPlanner: which chunks the scheduler side loads and saves, step by step."""

from __future__ import annotations

import pytest

from kvmesh.common.hashing import ChainSpec, RequestExtras, prefix_hashes
from kvmesh.connector.planner import ChunkPlanner, LoadSpec, SaveSpec, StepPlan

SPEC = ChainSpec("demo", chunk_size=8)
BLOCK = 4  # two blocks per chunk
NO = RequestExtras()


def _planner(min_hit: int = 8) -> ChunkPlanner:
    return ChunkPlanner(SPEC, BLOCK, min_hit)


def _lookup_all(l1: int | None = None):  # noqa: ANN202
    def lookup(hashes: list[bytes]) -> tuple[int, int]:
        return (len(hashes) if l1 is None else min(l1, len(hashes))), len(hashes)

    return lookup


def test_hit_never_covers_the_last_prompt_token() -> None:
    tokens = list(range(24))  # exactly 3 chunks
    assert _planner().match("r", tokens, NO, 0, _lookup_all()) == 16


def test_lookup_starts_after_vllms_prefix_cache_and_skips_its_blocks() -> None:
    tokens = list(range(33))
    planner = _planner()
    seen: list[list[bytes]] = []

    def lookup(hashes: list[bytes]) -> tuple[int, int]:
        seen.append(hashes)
        return 1, len(hashes)

    # vLLM holds 12 tokens (3 blocks): the lookup starts at chunk 1, the load skips its first block.
    assert planner.match("r", tokens, NO, 12, lookup) == 32 - 12
    all_hashes = prefix_hashes(tokens, SPEC, NO)
    assert seen == [all_hashes[1:4]]
    planner.allocated("r", lambda: tokens, NO, 20)
    plan = StepPlan()
    block_ids = [10, 11, 12, 13, 14, 15, 16, 17, 18]
    planner.plan("r", block_ids, 32, 33, plan)
    assert plan.loads == [
        LoadSpec(
            "r",
            tuple(all_hashes[1:4]),
            first_chunk=1,
            skip_blocks=1,
            block_ids=(13, 14, 15, 16, 17),
            l1_tokens=4,
        )
    ]
    assert plan.saves == []  # nothing new completed: chunk 4 needs token 40


def test_tiny_hits_are_skipped() -> None:
    tokens = list(range(40))
    assert _planner(min_hit=16).match("r", tokens, NO, 0, lambda h: (1, 1)) == 0
    assert _planner(min_hit=16).match("r", tokens, NO, 0, lambda h: (2, 2)) == 16


def test_no_match_when_vllm_already_has_everything() -> None:
    tokens = list(range(17))
    assert _planner().match("r", tokens, NO, 16, _lookup_all()) == 0


def test_vllm_rejecting_the_match_means_no_load() -> None:
    tokens = list(range(40))
    planner = _planner()
    assert planner.match("r", tokens, NO, 0, _lookup_all()) == 32
    assert planner.allocated("r", lambda: tokens, NO, 0) is None
    plan = StepPlan()
    planner.plan("r", list(range(10)), 0, 40, plan)
    assert plan.loads == []


def test_saves_each_completed_chunk_exactly_once_across_steps() -> None:
    tokens = list(range(30))
    planner = _planner()
    assert planner.match("r", tokens, NO, 0, lambda h: (0, 0)) == 0
    planner.allocated("r", lambda: tokens, NO, 0)
    hashes = prefix_hashes(tokens, SPEC, NO)
    blocks = list(range(100, 108))
    plan1 = StepPlan()
    planner.plan("r", blocks, 0, 12, plan1)  # chunked prefill: 12 tokens this step
    assert plan1.saves == [SaveSpec("r", (hashes[0],), (100, 101))]
    plan2 = StepPlan()
    planner.plan("r", blocks, 12, 30, plan2)
    assert plan2.saves == [SaveSpec("r", tuple(hashes[1:3]), (102, 103, 104, 105))]
    plan3 = StepPlan()
    planner.plan("r", blocks, 30, 31, plan3)
    assert plan3.saves == []
    planner.finished("r")
    assert planner.active_requests == 0


def test_chunks_loaded_from_a_tier_are_not_saved_again() -> None:
    tokens = list(range(26))
    planner = _planner()
    assert planner.match("r", tokens, NO, 0, _lookup_all()) == 24
    planner.allocated("r", lambda: tokens, NO, 24)
    plan = StepPlan()
    planner.plan("r", list(range(7)), 24, 26, plan)
    assert [load.block_ids for load in plan.loads] == [(0, 1, 2, 3, 4, 5)]
    assert plan.saves == []


def test_cache_salt_and_lora_change_every_hash() -> None:
    tokens = list(range(16))
    base = prefix_hashes(tokens, SPEC, NO)
    salted = prefix_hashes(tokens, SPEC, RequestExtras(cache_salt="t1"))
    lora = prefix_hashes(tokens, SPEC, RequestExtras(lora_name="sql"))
    assert not set(base) & set(salted) and not set(base) & set(lora) and not set(salted) & set(lora)


def test_chunk_must_tile_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of block size"):
        ChunkPlanner(ChainSpec("m", chunk_size=10), 4, 0)
