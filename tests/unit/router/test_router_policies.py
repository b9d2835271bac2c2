"""Each strategy's decisions, asserted exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kvmesh.common.hashing import ChainSpec, RequestExtras, prefix_hashes
from kvmesh.common.kv_events import KVEventBatch, Tier, admitted
from kvmesh.router.config import BackendSpec, RouterConfig
from kvmesh.router.endpoints import Endpoint
from kvmesh.router.kv_index import KVIndex
from kvmesh.router.policies.base import PolicyDeps, RoutingRequest, create_policy
from kvmesh.router.policies.session import SessionPolicy
from kvmesh.router.routing_text import ModelRenderer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from router_backends import make_tiny_model_dir  # noqa: E402

URLS = ["http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"]
SYSTEM = {"role": "system", "content": "you are a helpful bot"}


def _config(**kw: object) -> RouterConfig:
    return RouterConfig(backends=tuple(BackendSpec(u) for u in URLS), **kw)  # type: ignore[arg-type]


def _eps(n: int = 3) -> list[Endpoint]:
    return [Endpoint(u) for u in URLS[:n]]


def _chat(*contents: str, **body: object) -> RoutingRequest:
    msgs = [SYSTEM]
    for i, c in enumerate(contents):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": c})
    return RoutingRequest("/v1/chat/completions", {"model": "m", "messages": msgs, **body}, {})


def _pick(policy, req: RoutingRequest, eps: list[Endpoint]) -> tuple[int, str]:  # noqa: ANN001
    d = policy.select(req, eps)
    return eps.index(d.endpoint), d.reason


def test_roundrobin_cycles_in_url_order() -> None:
    policy = create_policy("roundrobin", _config(strategy="roundrobin"), PolicyDeps(KVIndex()))
    eps = _eps()
    assert [_pick(policy, _chat("x"), eps) for _ in range(4)] == [
        (0, "roundrobin"), (1, "roundrobin"), (2, "roundrobin"), (0, "roundrobin")]


def test_prefixaware_spreads_new_conversations_sequentially_then_sticks() -> None:
    policy = create_policy("prefixaware", _config(), PolicyDeps(KVIndex()))
    eps = _eps()
    firsts = [_pick(policy, _chat(f"hello {i}"), eps) for i in range(6)]
    assert firsts == [(0, "new"), (1, "new"), (2, "new"), (0, "new"), (1, "new"), (2, "new")]
    # Turn 2 of every conversation returns to its first backend.
    seconds = [_pick(policy, _chat(f"hello {i}", "answer", "more"), eps) for i in range(6)]
    assert seconds == [(0, "affinity"), (1, "affinity"), (2, "affinity")] * 2


def test_prefixaware_spills_over_the_load_bound_and_records_new_owner() -> None:
    policy = create_policy("prefixaware", _config(load_slack=2, load_smoothing_s=0), PolicyDeps(KVIndex()))
    eps = _eps()
    assert _pick(policy, _chat("hello"), eps) == (0, "new")
    # mean = (6 + 0 + 1 + 1) / 3 -> cap = max(ceil(1.25 * 2.67), ceil(2.67) + 2) = 5; 6 + 1 > 5.
    eps[0].in_flight, eps[1].in_flight, eps[2].in_flight = 6, 1, 0
    assert policy.load_cap([6, 1, 0]) == 5
    assert _pick(policy, _chat("hello", "a", "q2"), eps) == (2, "spill")
    eps[0].in_flight = eps[1].in_flight = eps[2].in_flight = 0
    assert _pick(policy, _chat("hello", "a", "q2", "a2", "q3"), eps) == (2, "affinity")


def test_prefixaware_keeps_affinity_within_the_bound() -> None:
    policy = create_policy("prefixaware", _config(load_slack=2, load_smoothing_s=0), PolicyDeps(KVIndex()))
    eps = _eps()
    assert _pick(policy, _chat("hello"), eps) == (0, "new")
    eps[0].in_flight = 3  # mean 4/3 -> cap max(2, 2 + 2) = 4; 3 + 1 <= 4
    assert _pick(policy, _chat("hello", "a", "q2"), eps) == (0, "affinity")


def test_prefixaware_new_conversations_skip_endpoints_over_the_bound() -> None:
    policy = create_policy("prefixaware", _config(load_slack=0, load_smoothing_s=0), PolicyDeps(KVIndex()))
    eps = _eps()
    assert [_pick(policy, _chat(f"warm {i}"), eps)[0] for i in range(3)] == [0, 1, 2]
    eps[0].in_flight = 10  # mean 11/3 -> cap max(ceil(4.58), 4 + 0) = 5: endpoint 0 is over it
    assert [_pick(policy, _chat(f"new {i}"), eps) for i in range(3)] == [(1, "new"), (2, "new"), (1, "new")]
    eps[0].in_flight = 0  # back within the bound: it has the fewest conversations now
    assert _pick(policy, _chat("late"), eps) == (0, "new")


def test_prefixaware_bound_uses_the_load_average_not_a_momentary_burst() -> None:
    import time

    policy = create_policy("prefixaware", _config(load_slack=2, load_smoothing_s=5.0), PolicyDeps(KVIndex()))
    eps = _eps()
    assert _pick(policy, _chat("hello"), eps) == (0, "new")
    now = time.monotonic()
    eps[0].track(20, now, 5.0)  # a burst of 20 just arrived: the average is still ~0
    assert eps[0].smoothed_load(now, 5.0) == 0.0
    assert _pick(policy, _chat("hello", "a", "q2"), eps) == (0, "affinity")
    eps[0].load_avg, eps[0].load_t = 20.0, time.monotonic()  # a lasting overload
    assert _pick(policy, _chat("hello", "a", "q2", "a2", "q3"), eps) == (1, "spill")


def test_endpoint_load_average_is_an_exact_ewma() -> None:
    import math

    ep = Endpoint(URLS[0])
    ep.track(1, 10.0, 2.0)  # 0 -> 1 in flight at t=10
    assert ep.smoothed_load(12.0, 2.0) == pytest.approx(1 - math.exp(-1))
    ep.track(-1, 12.0, 2.0)  # back to 0 at t=12
    assert ep.smoothed_load(14.0, 2.0) == pytest.approx((1 - math.exp(-1)) * math.exp(-1))
    assert (ep.in_flight, ep.smoothed_load(14.0, 0)) == (0, 0.0)


def test_prefixaware_forgets_removed_endpoints() -> None:
    policy = create_policy("prefixaware", _config(), PolicyDeps(KVIndex()))
    eps = _eps()
    assert _pick(policy, _chat("hello"), eps) == (0, "new")
    policy.on_endpoints_changed([], [eps[0]])
    assert _pick(policy, _chat("hello", "a", "q2"), eps[1:]) == (0, "new")
    assert policy.structure_sizes()["prefix_tree"][0] == policy.tree.num_nodes


def test_session_header_then_body_then_fallback() -> None:
    policy = create_policy("session", _config(strategy="session", session_key="x-session-id"),
                           PolicyDeps(KVIndex()))
    eps = _eps()
    by_header = RoutingRequest("/v1/completions", {"model": "m", "prompt": "p"}, {"x-session-id": "alice"})
    by_body = RoutingRequest("/v1/completions", {"model": "m", "prompt": "p", "x-session-id": "alice"}, {})
    first = _pick(policy, by_header, eps)
    assert first[1] == "hash"
    assert [_pick(policy, by_header, eps), _pick(policy, by_body, eps)] == [first, first]
    eps[1].in_flight = 1
    eps[0].in_flight = 2
    assert _pick(policy, RoutingRequest("/v1/completions", {"model": "m"}, {}), eps) == (2, "fallback")


def test_session_moves_about_one_nth_when_an_endpoint_leaves() -> None:
    policy = SessionPolicy(_config(strategy="session"), PolicyDeps(KVIndex()))
    eps = _eps()
    keys = [f"user-{i}" for i in range(600)]

    def owners(cands: list[Endpoint]) -> dict[str, str]:
        return {k: policy.select(RoutingRequest("/v1/completions", {}, {"x-session-id": k}), cands).endpoint.url
                for k in keys}

    before = owners(eps)
    policy.on_endpoints_changed([], [eps[2]])
    after = owners(eps[:2])
    moved = [k for k in keys if before[k] != after[k]]
    assert moved == [k for k in keys if before[k] == URLS[2]]  # only the leaver's sessions move
    assert 0.2 <= len(moved) / len(keys) <= 0.47
    policy.on_endpoints_changed([eps[2]], [])
    assert owners(eps) == before  # and they come back when it returns


# ---- kvaware ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> ModelRenderer:
    return ModelRenderer.load(make_tiny_model_dir(tmp_path_factory.mktemp("tiny")))


def _kv_policy(renderer: ModelRenderer, index: KVIndex):  # noqa: ANN202
    cfg = _config(strategy="kvaware", model_dir="unused", chunk_size=4)
    return create_policy("kvaware", cfg, PolicyDeps(index, renderer))


def _hashes(renderer: ModelRenderer, text: str, **extras: str) -> list[bytes]:
    ids = renderer.tokenizer.encode(text, add_special_tokens=False).ids
    return prefix_hashes(ids, ChainSpec("m", 4), RequestExtras(**extras))


def _admit(index: KVIndex, url: str, tier: Tier, hashes: list[bytes]) -> None:
    index.apply(KVEventBatch(url, "m", 4, 1, 0, [admitted(tier, hashes)]))


def test_kvaware_chat_keys_match_the_engine_rendering(renderer: ModelRenderer) -> None:
    policy = _kv_policy(renderer, KVIndex())
    req = _chat("hello there how is the weather today")
    rendered = "<|system|> you are a helpful bot <|user|> hello there how is the weather today <|assistant|> "
    assert renderer.chat_text(req.body) == rendered
    hashes, num_tokens = policy.chain_hashes(req)
    assert hashes == _hashes(renderer, rendered)
    assert (len(hashes), num_tokens) == (5, 21)
    salted, _ = policy.chain_hashes(_chat("hello there how is the weather today", cache_salt="t1"))
    assert salted == _hashes(renderer, rendered, cache_salt="t1") != hashes


def test_kvaware_scores_tiers_queue_and_shared_l2(renderer: ModelRenderer) -> None:
    index = KVIndex()
    policy = _kv_policy(renderer, index)
    eps = _eps()
    req = _chat("hello there how is the weather today")
    hashes, num_tokens = policy.chain_hashes(req)  # 21 tokens, 5 chunks of 4
    _admit(index, URLS[1], Tier.ENGINE, hashes[:5])
    _admit(index, URLS[0], Tier.L1, hashes[:2])
    _admit(index, URLS[2], Tier.L2, hashes[:1])
    holders = index.lookup(hashes)
    # estimates (ms): prefill 0.45/token, L1 0.002/token, L2 0.01/token, engine 0, queue 50/request
    assert policy.estimate_ms(eps[0], holders, num_tokens) == pytest.approx(2 * 4 * 0.002 + 13 * 0.45)
    assert policy.estimate_ms(eps[1], holders, num_tokens) == pytest.approx(1 * 0.45)
    assert policy.estimate_ms(eps[2], holders, num_tokens) == pytest.approx(4 * 0.01 + 17 * 0.45)
    assert _pick(policy, req, eps) == (1, "kv_hit")
    eps[1].in_flight = 1  # 0.45 + 50 > 5.866: the queue outweighs the hits
    assert _pick(policy, req, eps) == (0, "kv_hit")


def test_kvaware_falls_back_to_prefixaware_without_events(renderer: ModelRenderer) -> None:
    policy = _kv_policy(renderer, KVIndex())
    eps = _eps()
    assert [_pick(policy, _chat(f"hello {w}"), eps)[1] for w in ("one", "two")] == ["fallback", "fallback"]
    assert policy.structure_sizes()["kv_index"] == (0, 0)


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown routing strategy"):
        create_policy("random", _config(), PolicyDeps(KVIndex()))
