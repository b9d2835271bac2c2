"""The simulated worker's OpenAI-compatible HTTP API (aiohttp).

Routes: ``GET /health``, ``GET /metrics``, ``GET /v1/models``,
``POST /v1/completions``, ``POST /v1/chat/completions`` (streamed as
server-sent events when ``"stream": true``). Bad requests get OpenAI-style
error JSON with a 4xx, like vLLM. The final usage carries
``prompt_tokens_details.cached_tokens``, so a client can measure hit rates.

SSE stream, one event per token::

    data: {"id": "cmpl-…", "object": "chat.completion.chunk", "choices": [{"index": 0,
           "delta": {"content": " word"}, "finish_reason": null}], ...}\\n\\n
    ...   (last token has "finish_reason": "length")
    data: {"choices": [], "usage": {...}}\\n\\n        (only with stream_options.include_usage)
    data: [DONE]\\n\\n
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kvmesh.common.hashing import RequestExtras
from kvmesh.sim.engine import DONE, SimEngine, SimRequest
from kvmesh.sim.tokenizer import ChatTemplate, SimTokenizer, render_chat

_INLINE_PARSE_BYTES = 32 << 10
"""Bodies larger than this are parsed and tokenized in a worker thread."""

_WORDS = ("the", "cache", "token", "model", "router", "answer", "is", "a", "fast", "chunk",
          "of", "and", "prefix", "node", "in", "to")


class RequestError(ValueError):
    """A client error, turned into an OpenAI error body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


def error_response(message: str, status: int, param: str | None = None) -> web.Response:
    """OpenAI-style error JSON."""
    kind = "invalid_request_error" if status < 500 else "internal_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return web.json_response(body, status=status)


@dataclass(frozen=True)
class ParsedRequest:
    """What the engine needs from one OpenAI request body."""

    chat: bool
    prompt_tokens: list[int]
    max_tokens: int
    stream: bool
    include_usage: bool
    extras: RequestExtras


class SimApi:
    """Request parsing and response shaping around one :class:`SimEngine`."""

    def __init__(self, engine: SimEngine, tokenizer: SimTokenizer, chat_template: ChatTemplate | None) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.model_id = engine.config.model_id

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        return app

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.engine.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, _request: web.Request) -> web.Response:
        card = {"id": self.model_id, "object": "model", "created": 0, "owned_by": "kvmesh-sim",
                "max_model_len": self.engine.config.max_model_len}
        return web.json_response({"object": "list", "data": [card]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_response("request body is not valid JSON", 400)
        try:
            if (request.content_length or 0) > _INLINE_PARSE_BYTES:
                # Tokenizing a long prompt takes milliseconds; off the loop, the other
                # replicas sharing this process keep streaming meanwhile.
                parsed = await asyncio.to_thread(self.parse, body, chat=chat)
            else:
                parsed = self.parse(body, chat=chat)
        except RequestError as exc:
            return error_response(str(exc), exc.status, exc.param)
        req = SimRequest(parsed.prompt_tokens, parsed.max_tokens, parsed.extras)
        self.engine.submit(req)
        try:
            if parsed.stream:
                return await self._stream(request, parsed, req)
            return await self._complete(parsed, req)
        finally:
            req.cancelled = True  # no-op when finished; stops the engine work on disconnect

    def parse(self, body: Any, *, chat: bool) -> ParsedRequest:
        """Validate an OpenAI request body; ``RequestError`` names the bad field."""
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object")
        model = body.get("model", self.model_id)
        if model != self.model_id:
            raise RequestError(f"The model `{model}` does not exist.", "model", 404)
        tokens = self._prompt_tokens(body, chat)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = self.engine.config.default_max_tokens
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise RequestError("max_tokens must be a positive integer", "max_tokens")
        if len(tokens) + max_tokens > self.engine.config.max_model_len:
            raise RequestError(
                f"prompt ({len(tokens)} tokens) + max_tokens ({max_tokens}) exceeds the model's "
                f"maximum context length ({self.engine.config.max_model_len})", "max_tokens")
        stream_options = body.get("stream_options") or {}
        if not isinstance(stream_options, dict):
            raise RequestError("stream_options must be an object", "stream_options")
        salt = body.get("cache_salt")
        if salt is not None and not isinstance(salt, str):
            raise RequestError("cache_salt must be a string", "cache_salt")
        return ParsedRequest(chat, tokens, max_tokens, bool(body.get("stream", False)),
                             bool(stream_options.get("include_usage", False)),
                             RequestExtras(cache_salt=salt))

    def _prompt_tokens(self, body: dict[str, Any], chat: bool) -> list[int]:
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise RequestError("messages must be a non-empty list of objects", "messages")
            try:
                tokens = self.tokenizer.encode(render_chat(messages, self.chat_template))
            except ValueError as exc:
                raise RequestError(str(exc), "messages") from exc
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if isinstance(prompt, str):
                tokens = self.tokenizer.encode(prompt, add_special_tokens=True)
            elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool)
                                                  and 0 <= t < 2**32 for t in prompt):
                tokens = list(prompt)
            else:
                raise RequestError("prompt must be a string or a list of token ids", "prompt")
        if not tokens:
            raise RequestError("the prompt is empty", "messages" if chat else "prompt")
        return tokens

    async def _stream(self, request: web.Request, parsed: ParsedRequest, req: SimRequest) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        try:
            await self._write_events(resp, parsed, req)
        except ConnectionResetError:
            pass  # the client left; the caller cancels the engine request
        return resp

    async def _write_events(self, resp: web.StreamResponse, parsed: ParsedRequest, req: SimRequest) -> None:
        rid, created = _new_id(parsed.chat), int(time.time())
        obj = "chat.completion.chunk" if parsed.chat else "text_completion"
        while (index := await req.tokens.get()) != DONE:
            finish = "length" if index + 1 >= parsed.max_tokens else None
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if parsed.chat:
                choice["delta"] = {"role": "assistant", "content": _word(index)} if index == 0 \
                    else {"content": _word(index)}
            else:
                choice["text"] = _word(index)
                choice["logprobs"] = None
            chunk = {"id": rid, "object": obj, "created": created, "model": self.model_id, "choices": [choice]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if parsed.include_usage:
            usage_chunk = {"id": rid, "object": obj, "created": created, "model": self.model_id,
                           "choices": [], "usage": _usage(req)}
            await resp.write(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()

    async def _complete(self, parsed: ParsedRequest, req: SimRequest) -> web.Response:
        words = []
        while (index := await req.tokens.get()) != DONE:
            words.append(_word(index))
        text = "".join(words)
        finish = "length" if len(words) >= parsed.max_tokens else "abort"
        if parsed.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        body = {"id": _new_id(parsed.chat), "object": "chat.completion" if parsed.chat else "text_completion",
                "created": int(time.time()), "model": self.model_id, "choices": [choice], "usage": _usage(req)}
        return web.json_response(body)


def _new_id(chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"


def _word(index: int) -> str:
    return " " + _WORDS[(index * 7 + 3) % len(_WORDS)]


def _usage(req: SimRequest) -> dict[str, Any]:
    return {"prompt_tokens": req.prompt_len, "completion_tokens": req.generated,
            "total_tokens": req.prompt_len + req.generated,
            "prompt_tokens_details": {"cached_tokens": req.cached_tokens}}
