"""One streamed OpenAI chat request, timed from the client side.

The server-sent event stream is read line by line as it arrives (no
buffering), so the first content chunk's arrival time is the real TTFT::

    data: {"choices": [{"delta": {"content": "..."}}], ...}   -> a token chunk (content may be "")
    data: {"choices": [], "usage": {...}}                      -> usage (include_usage)
    data: [DONE]
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from kvmesh.bench.stats import RequestRecord
from kvmesh.sim.tokenizer import count_tokens

SESSION_HEADER = "x-session-id"
"""Header naming the conversation, for the router's ``session`` strategy."""


def chat_body(model: str, messages: list[dict[str, str]], max_tokens: int, conv_id: str) -> dict[str, Any]:
    """The request body: greedy, fixed output length (``ignore_eos``), usage in the stream."""
    return {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": conv_id,
    }


async def send_chat(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], record: RequestRecord
) -> RequestRecord:
    """POST ``body`` to ``url``/v1/chat/completions and fill ``record``; never raises on HTTP errors."""
    record.start_s = time.monotonic()
    headers = {SESSION_HEADER: record.conv_id}
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
            if resp.status != 200:
                text = await resp.text()
                record.error = f"HTTP {resp.status}: {text[:200]}"
                return record
            await _read_stream(resp, record)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:300]
    record.end_s = time.monotonic()
    if record.error is None and record.ttft_s is None:
        record.error = "stream ended without any token"
    if not record.input_tokens:
        record.input_tokens = sum(count_tokens(m["content"]) for m in body["messages"])
    return record


async def _read_stream(resp: aiohttp.ClientResponse, record: RequestRecord) -> None:
    chunks = 0
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        event = json.loads(data)
        if "error" in event:
            record.error = f"stream error: {str(event['error'])[:200]}"
            return
        now = time.monotonic()
        if _is_token_chunk(event):
            if record.ttft_s is None:
                record.ttft_s = now - record.start_s
            record.chunk_times_s.append(now)
            chunks += 1
        usage = event.get("usage")
        if isinstance(usage, dict):
            record.input_tokens = int(usage.get("prompt_tokens") or 0)
            record.output_tokens = int(usage.get("completion_tokens") or 0)
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and details.get("cached_tokens") is not None:
                record.cached_tokens = int(details["cached_tokens"])
    if not record.output_tokens:
        record.output_tokens = chunks


def _is_token_chunk(event: dict[str, Any]) -> bool:
    """True for a chunk that carries generated output (possibly empty text).

    A byte-level model can emit tokens whose text is not yet a whole UTF-8
    character, so vLLM streams chunks with empty content; they still mark a
    token's arrival (the usage-only chunk has no choices and does not count).
    """
    choices = event.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    return "delta" in choice or "text" in choice
