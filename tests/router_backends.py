"""A real HTTP fake OpenAI backend for router tests, and helpers to run it as a process.

Run: ``python tests/router_backends.py --port P --name b1 [--model tiny]``.

Every response names the backend that served it (``system_fingerprint`` and
the text ``served by <name>``), so tests can assert routing exactly. The
behaviour is switched at run time with ``POST /control``::

    {"mode": "ok" | "fail" | "hang" | "die_mid_stream" | "slow" | "slow_stream", "delay_s": 0.5,
     "healthy": true}

``slow`` waits ``delay_s`` before answering; ``slow_stream`` waits ``delay_s`` between SSE events.

``GET /stats`` returns ``{"requests": n, "bodies": [...]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

from aiohttp import web


def build_app(name: str, model: str) -> web.Application:
    state = {"mode": "ok", "delay_s": 0.0, "healthy": True, "requests": 0, "bodies": []}

    async def health(_: web.Request) -> web.Response:
        if not state["healthy"]:
            return web.json_response({"status": "down"}, status=503)
        return web.json_response({"status": "ok", "name": name})

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": "test"}]})

    async def control(request: web.Request) -> web.Response:
        state.update(await request.json())
        return web.json_response({k: state[k] for k in ("mode", "delay_s", "healthy")})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"requests": state["requests"], "bodies": state["bodies"]})

    async def complete(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state["requests"] += 1
        state["bodies"].append(body)
        chat = request.path.endswith("/chat/completions")
        mode = state["mode"]
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "fail":
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        if mode == "slow":
            await asyncio.sleep(state["delay_s"])
        text = f"served by {name}"
        if body.get("stream"):
            gap = state["delay_s"] if mode == "slow_stream" else 0.0
            return await _stream(request, chat, body, text, die=(mode == "die_mid_stream"), gap_s=gap)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            obj = "text_completion"
        return web.json_response({
            "id": f"cmpl-{name}-{state['requests']}", "object": obj, "created": int(time.time()),
            "model": body.get("model"), "system_fingerprint": name, "choices": [choice],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})

    async def _stream(request: web.Request, chat: bool, body: dict, text: str, die: bool,
                      gap_s: float) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            if chat:
                choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": piece, "finish_reason": None, "logprobs": None}
                obj = "text_completion"
            event = {"id": f"cmpl-{name}", "object": obj, "created": 0, "model": body.get("model"),
                     "system_fingerprint": name, "choices": [choice]}
            if i and gap_s:
                await asyncio.sleep(gap_s)  # a slow decode between events
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
            if die and i == 0:
                assert request.transport is not None
                request.transport.abort()  # the backend "crashes" after the first event
                return resp
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.add_routes([web.get("/health", health), web.get("/v1/models", models), web.post("/control", control),
                    web.get("/stats", stats), web.post("/v1/completions", complete),
                    web.post("/v1/chat/completions", complete)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    # Hung handlers must not delay shutdown (tests stop backends mid-hang).
    web.run_app(build_app(args.name, args.model), host="127.0.0.1", port=args.port, print=None,
                shutdown_timeout=0.2)


# ---- helpers for tests ------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def running_backends(names: list[str], model: str = "tiny") -> Iterator[dict[str, "Backend"]]:
    """Start one fake backend process per name; yields name -> Backend."""
    from kvmesh.common.procs import ManagedProcess, find_free_port, http_ready, wait_until

    started: dict[str, Backend] = {}
    try:
        for name in names:
            port = find_free_port()
            proc = ManagedProcess([sys.executable, __file__, "--port", str(port), "--name", name,
                                   "--model", model], f"backend-{name}").start()
            started[name] = Backend(name, port, proc)
        for b in started.values():
            wait_until(lambda b=b: http_ready(f"{b.url}/health"), 30, f"backend {b.name}", alive=b.proc.alive)
        yield started
    finally:
        for b in started.values():
            b.proc.stop()


class Backend:
    """A running fake backend."""

    def __init__(self, name: str, port: int, proc) -> None:  # noqa: ANN001
        self.name, self.port, self.proc = name, port, proc
        self.url = f"http://127.0.0.1:{port}"

    def control(self, **settings: object) -> None:
        import urllib.request

        req = urllib.request.Request(f"{self.url}/control", data=json.dumps(settings).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (loopback)
            resp.read()

    def stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as resp:  # noqa: S310
            return json.loads(resp.read())


class Router:
    """A running ``kvmesh router`` process."""

    def __init__(self, port: int, proc) -> None:  # noqa: ANN001
        self.port, self.proc = port, proc
        self.url = f"http://127.0.0.1:{port}"

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value from /metrics (0.0 when absent)."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:  # noqa: S310
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0


@contextmanager
def running_router(args: list[str], log_path: Path | None = None) -> Iterator[Router]:
    """``kvmesh router ARGS --port FREE``; ready once /health answers 200."""
    from kvmesh.common.procs import ManagedProcess, find_free_port, http_ready, wait_until

    port = find_free_port()
    proc = ManagedProcess([sys.executable, "-m", "kvmesh", "router", "--port", str(port), *args], "router",
                          log_path=log_path).start()
    try:
        wait_until(lambda: http_ready(f"http://127.0.0.1:{port}/health"), 30, "router", alive=proc.alive)
        yield Router(port, proc)
    finally:
        proc.stop()


if __name__ == "__main__":
    main()


# ---- a tiny local model directory (tokenizer + chat template) for kvaware ----

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
TINY_WORDS = ("system user assistant you are a helpful bot hello there how is the weather today "
              "tell me about cats and dogs please thanks one two three four five six seven eight")


def make_tiny_model_dir(path: Path) -> Path:
    """Write tokenizer.json (WordLevel over TINY_WORDS) and tokenizer_config.json with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]"])
    tok.train_from_iterator([TINY_WORDS, "<| |>"], trainer=trainer)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": TINY_CHAT_TEMPLATE}))
    return path
