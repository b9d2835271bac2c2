"""The simulated worker's HTTP API, in process (aiohttp on a free loopback port)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import aiohttp
import pytest

from kvmesh.common.hashing import ChainSpec, prefix_hashes
from kvmesh.common.kv_events import EventKind, KVEvent, Tier
from kvmesh.sim.config import SimConfig
from kvmesh.sim.presets import SimPreset
from kvmesh.sim.tokenizer import WordTokenizer, render_chat
from kvmesh.sim.worker import SimWorker

@pytest.fixture
async def worker(fast_preset: SimPreset) -> AsyncIterator[SimWorker]:
    w = await SimWorker(SimConfig(preset=fast_preset, port=0, chunk_size=64, block_size=16)).start()
    try:
        yield w
    finally:
        await w.stop()


async def _post(url: str, body: object) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        return r.status, await r.json()


def _prompt(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


async def test_models_and_health(worker: SimWorker) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(worker.url + "/v1/models") as r:
            assert (await r.json())["data"][0]["id"] == "demo"
        async with s.get(worker.url + "/health") as r:
            assert r.status == 200


async def test_repeat_prompt_reuses_engine_blocks(worker: SimWorker) -> None:
    body = {"prompt": _prompt(100), "max_tokens": 3}
    status, first = await _post(worker.url + "/v1/completions", body)
    assert status == 200
    assert first["usage"] == {"prompt_tokens": 100, "completion_tokens": 3, "total_tokens": 103,
                              "prompt_tokens_details": {"cached_tokens": 0}}
    _, second = await _post(worker.url + "/v1/completions", body)
    # 6 full 16-token blocks are cached; the last prompt token is always recomputed.
    assert second["usage"]["prompt_tokens_details"] == {"cached_tokens": 96}
    assert second["choices"][0]["finish_reason"] == "length"


async def test_chat_stream_format(worker: SimWorker) -> None:
    body = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4, "stream": True,
            "stream_options": {"include_usage": True}}
    events = []
    async with aiohttp.ClientSession() as s, s.post(worker.url + "/v1/chat/completions", json=body) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        async for line in r.content:
            if line.strip():
                events.append(line.decode().strip())
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks[:4]]
    assert deltas[0]["role"] == "assistant" and all("content" in d for d in deltas)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:4]] == [None, None, None, "length"]
    prompt_tokens = len(WordTokenizer().encode(render_chat(body["messages"])))  # type: ignore[arg-type]
    assert chunks[4]["choices"] == [] and chunks[4]["usage"]["prompt_tokens"] == prompt_tokens


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/completions", {"prompt": ""}, 400, "prompt"),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/completions", {"prompt": {"x": 1}}, 400, "prompt"),
        ("/v1/completions", {"prompt": [1, 2**32]}, 400, "prompt"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "cache_salt": 5}, 400,
         "cache_salt"),
        ("/v1/completions", {"prompt": "hi", "model": "other"}, 404, "model"),
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 200_000}, 400, "max_tokens"),
    ],
)
async def test_bad_requests_get_openai_errors(worker: SimWorker, path: str, body: dict, status: int,
                                              param: str) -> None:
    got_status, got = await _post(worker.url + path, body)
    assert got_status == status
    assert got["error"]["param"] == param and got["error"]["code"] == status


async def test_invalid_json_is_400(worker: SimWorker) -> None:
    async with aiohttp.ClientSession() as s, s.post(worker.url + "/v1/completions", data=b"{nope") as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_metrics_exported(worker: SimWorker) -> None:
    await _post(worker.url + "/v1/completions", {"prompt": _prompt(20), "max_tokens": 2})
    async with aiohttp.ClientSession() as s, s.get(worker.url + "/metrics") as r:
        text = await r.text()
    assert "kvmesh_sim_prompt_tokens_total 20.0" in text
    assert "kvmesh_sim_generation_tokens_total 2.0" in text
    assert 'vllm:num_requests_running{model_name="demo"} 0.0' in text


async def test_engine_kv_events_carry_fleet_chunk_hashes(fast_preset: SimPreset) -> None:
    seen: list[KVEvent] = []

    def on_events(events: Sequence[KVEvent]) -> None:
        seen.extend(events)

    config = SimConfig(preset=fast_preset, port=0, chunk_size=64, block_size=16)
    w = SimWorker(config)
    await w.start()
    assert w.engine is not None
    w.engine._on_events = on_events  # the publisher is swapped for a recorder
    try:
        tokens = list(range(1, 140))
        await _post(w.url + "/v1/completions", {"prompt": tokens, "max_tokens": 1})
    finally:
        await w.stop()
    expected = prefix_hashes(tokens, ChainSpec("demo", 64))
    assert seen == [KVEvent(EventKind.ADMITTED, Tier.ENGINE, tuple(expected))]


async def test_cache_salt_isolates_tenants(worker: SimWorker) -> None:
    messages = [{"role": "user", "content": _prompt(80)}]
    await _post(worker.url + "/v1/chat/completions", {"messages": messages, "max_tokens": 1, "cache_salt": "a"})
    _, other = await _post(worker.url + "/v1/chat/completions",
                           {"messages": messages, "max_tokens": 1, "cache_salt": "b"})
    _, same = await _post(worker.url + "/v1/chat/completions",
                          {"messages": messages, "max_tokens": 1, "cache_salt": "a"})
    n = same["usage"]["prompt_tokens"]
    assert other["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert same["usage"]["prompt_tokens_details"]["cached_tokens"] == (n - 1) // 16 * 16


async def test_max_batch_queues_the_rest(fast_preset: SimPreset) -> None:
    """max_batch 1 serialises requests; the engine reports the second one as waiting meanwhile."""
    import asyncio

    preset = fast_preset.with_overrides(max_batch=1, decode_ms_per_token=20.0)
    w = await SimWorker(SimConfig(preset=preset, port=0)).start()
    try:
        assert w.engine is not None
        body = {"prompt": _prompt(10), "max_tokens": 5}
        first = asyncio.create_task(_post(w.url + "/v1/completions", body))
        second = asyncio.create_task(_post(w.url + "/v1/completions", body))
        waited = False
        while not (first.done() and second.done()):
            waited = waited or (w.engine.num_running == 1 and w.engine.num_waiting == 1)
            await asyncio.sleep(0.005)  # sampling the engine state, not waiting for readiness
        assert waited
        assert [t.result()[1]["usage"]["completion_tokens"] for t in (first, second)] == [5, 5]
    finally:
        await w.stop()


async def test_long_prompts_are_tokenized_off_the_loop_with_the_same_result(worker: SimWorker) -> None:
    prompt = " ".join(f"longword{i:06d}" for i in range(3000))  # ~45 KB: parsed in a worker thread
    body = {"prompt": prompt, "max_tokens": 1}
    status, first = await _post(worker.url + "/v1/completions", body)
    assert status == 200 and first["usage"]["prompt_tokens"] == 3000
    _, second = await _post(worker.url + "/v1/completions", body)
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == 2999 // 16 * 16
