"""The official openai SDK as the client of a prefixaware router."""

from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from router_backends import Backend, Router, running_backends, running_router  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def fleet():  # noqa: ANN201
    with running_backends(["b1", "b2", "b3"]) as backends:
        yield backends


@pytest.fixture(scope="module")
def router(fleet: dict[str, Backend]):  # noqa: ANN201
    args = [a for b in fleet.values() for a in ("--backend", b.url)]
    with running_router(args) as r:
        yield r


@pytest.fixture
def client(router: Router) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)


SYSTEM = {"role": "system", "content": "You are a helpful bot. " * 20}


def test_chat_completion(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="tiny", messages=[SYSTEM, {"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == f"served by {resp.system_fingerprint}"
    assert resp.system_fingerprint in {"b1", "b2", "b3"}


def test_completion(client: openai.OpenAI) -> None:
    resp = client.completions.create(model="tiny", prompt="Once upon a time")
    assert resp.choices[0].text == f"served by {resp.system_fingerprint}"


def test_streaming_chat_and_completion(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "stream please"}], stream=True))
    name = chunks[0].system_fingerprint
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == f"served by {name}"
    chunks = list(client.completions.create(model="tiny", prompt="stream me", stream=True))
    name = chunks[0].system_fingerprint
    assert "".join(c.choices[0].text for c in chunks) == f"served by {name}"


def test_models_and_errors(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_conversations_stick_and_spread(client: openai.OpenAI, router: Router) -> None:
    """Sequential new conversations spread over the 3 backends; later turns stay put."""
    histories = [[SYSTEM, {"role": "user", "content": f"conversation {i}"}] for i in range(6)]
    served: list[list[str]] = [[] for _ in histories]
    for _turn in range(3):
        for i, history in enumerate(histories):
            resp = client.chat.completions.create(model="tiny", messages=history)
            served[i].append(resp.system_fingerprint)
            history += [{"role": "assistant", "content": resp.choices[0].message.content},
                        {"role": "user", "content": f"and then {_turn}?"}]
    assert all(len(set(s)) == 1 for s in served)
    assert sorted(s[0] for s in served) == ["b1", "b1", "b2", "b2", "b3", "b3"]
    assert router.metric("kvmesh_router_routing_decisions_total", strategy="prefixaware", decision="affinity") >= 12
    assert router.metric("kvmesh_router_index_entries", structure="prefix_tree") > 1
    # Every one of the 18 decisions above was timed (other tests in this module add more).
    assert router.metric("kvmesh_router_decision_seconds_count", strategy="prefixaware") >= 18
    assert router.metric("kvmesh_router_decision_seconds_sum", strategy="prefixaware") > 0
