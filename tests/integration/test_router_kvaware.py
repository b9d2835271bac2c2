"""kvaware end to end: workers' KV events over ZeroMQ drive a real router process."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from router_backends import Router, make_tiny_model_dir, running_backends, running_router  # noqa: E402

from kvmesh.common.hashing import ChainSpec, prefix_hashes  # noqa: E402
from kvmesh.common.kv_event_bus import KVEventPublisher  # noqa: E402
from kvmesh.common.kv_events import Tier, admitted, evicted  # noqa: E402
from kvmesh.common.procs import find_free_port, wait_until  # noqa: E402
from kvmesh.router.routing_text import ModelRenderer  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
CHUNK = 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def setup(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    with running_backends(["b1", "b2", "b3"]) as fleet:
        pubs = {
            name: KVEventPublisher(f"tcp://127.0.0.1:{find_free_port()}", source=b.url, model_id="tiny",
                                   chunk_size=16 if name == "b3" else CHUNK)  # b3 hashes differently
            for name, b in fleet.items()
        }
        args = ["--routing-strategy", "kvaware", "--model-dir", str(model_dir), "--chunk-size", str(CHUNK)]
        for name, b in fleet.items():
            args += ["--backend", f"{b.url}#events={pubs[name].endpoint}"]
        log = tmp_path_factory.mktemp("router") / "router.log"
        try:
            with running_router(args, log) as router:
                # PUB/SUB joins asynchronously: heartbeat until every stream is seen.
                def joined() -> bool:
                    for pub in pubs.values():
                        pub.publish([])
                    return (router.metric("kvmesh_router_kv_event_batches_total") >= 1
                            and router.metric("kvmesh_router_kv_event_mismatch_total", reason="chunk_size") >= 1)
                wait_until(joined, 20, "router subscribed to KV events")
                yield fleet, pubs, router, log
        finally:
            for pub in pubs.values():
                pub.close()


def chat(router: Router, text: str, system: str = "you are a helpful bot") -> str:
    body = {"model": "tiny", "messages": [{"role": "system", "content": system},
                                          {"role": "user", "content": text}]}
    req = urllib.request.Request(f"{router.url}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
        return json.loads(resp.read())["system_fingerprint"]


def hashes_for(model_dir: Path, text: str) -> list[bytes]:
    """What a worker would publish: the engine's own rendering and tokenization."""
    renderer = ModelRenderer.load(model_dir)
    rendered = f"<|system|> you are a helpful bot <|user|> {text} <|assistant|> "
    ids = renderer.tokenizer.encode(rendered, add_special_tokens=False).ids
    return prefix_hashes(ids, ChainSpec("tiny", CHUNK))


def wait_entries(router: Router, n: int) -> None:
    wait_until(lambda: router.metric("kvmesh_router_index_entries", structure="kv_index") == n, 10,
               f"kv index has {n} entries")


def test_events_steer_chat_requests_and_eviction_is_seen(setup, model_dir: Path) -> None:  # noqa: ANN001
    fleet, pubs, router, _ = setup
    text = "tell me about cats and dogs please"
    keys = hashes_for(model_dir, text)
    assert len(keys) == 5
    pubs["b2"].publish([admitted(Tier.ENGINE, keys)])
    wait_entries(router, 5)
    hits = router.metric("kvmesh_router_routing_decisions_total", strategy="kvaware", decision="kv_hit")
    assert [chat(router, text) for _ in range(3)] == ["b2", "b2", "b2"]
    # Evicted from b2's engine, held in b1's L1: the router follows at once.
    pubs["b2"].publish([evicted(Tier.ENGINE, keys)])
    pubs["b1"].publish([admitted(Tier.L1, keys[:2])])
    wait_until(lambda: chat(router, text) == "b1", 10, "routing follows the eviction")
    assert router.metric("kvmesh_router_routing_decisions_total", strategy="kvaware",
                         decision="kv_hit") >= hits + 4


def test_no_events_falls_back_to_prefixaware(setup) -> None:  # noqa: ANN001
    _, _, router, _ = setup
    before = router.metric("kvmesh_router_routing_decisions_total", strategy="kvaware", decision="fallback")
    # Another system prompt: not even chunk 0 is held anywhere.
    first = chat(router, "one two three four five six seven eight", system="a bot")
    assert first in {"b1", "b2", "b3"}
    assert router.metric("kvmesh_router_routing_decisions_total", strategy="kvaware",
                         decision="fallback") == before + 1


def test_mismatched_worker_is_loud_and_ignored(setup, model_dir: Path) -> None:  # noqa: ANN001
    _, pubs, router, log = setup
    text = "how is the weather today"
    before = router.metric("kvmesh_router_kv_event_mismatch_total", reason="chunk_size")
    entries = router.metric("kvmesh_router_index_entries", structure="kv_index")
    pubs["b3"].publish([admitted(Tier.ENGINE, hashes_for(model_dir, text))])
    wait_until(lambda: router.metric("kvmesh_router_kv_event_mismatch_total", reason="chunk_size") > before,
               10, "mismatch counted")
    assert router.metric("kvmesh_router_index_entries", structure="kv_index") == entries
    assert "ignored: chunk_size differs" in log.read_text()


def test_lost_batch_drops_that_workers_entries(setup, model_dir: Path) -> None:  # noqa: ANN001
    _, pubs, router, _ = setup
    keys = hashes_for(model_dir, "hello there how is the weather today")
    pubs["b1"].publish([admitted(Tier.ENGINE, keys)])
    wait_until(lambda: router.metric("kvmesh_router_index_entries", structure="kv_index") >= len(keys), 10,
               "admitted")
    gaps = router.metric("kvmesh_router_kv_event_gaps_total")
    pubs["b1"]._seq += 1  # simulate one batch lost on the wire
    pubs["b1"].publish([])
    wait_until(lambda: router.metric("kvmesh_router_kv_event_gaps_total") == gaps + 1, 10, "gap seen")
    # b1's entries are gone; b2's earlier entries are not (the first test evicted its engine copies, so
    # only entries held by someone other than b1 can remain).
    assert router.metric("kvmesh_router_index_entries", structure="kv_index") == 0
