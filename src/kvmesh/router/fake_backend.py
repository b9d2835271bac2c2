"""A fast fake OpenAI backend for ``kvmesh bench router`` (and manual testing).

It is built on the router's own protocol server so that the backend's cost
is small and stable next to the router being measured. Every answer names
the backend (``system_fingerprint``) so the benchmark can measure stickiness.
A body field ``fake_delay_ms`` delays the answer (simulated prefill), and
``stream: true`` gets ``fake_events`` SSE events (default 4).

Run: ``python -m kvmesh.router.fake_backend --port 9001 --name b1``.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson

from kvmesh.router.http_server import ClientConnection, HttpRequest, start_server


class FakeBackend:
    """Answers /health, /v1/models, /v1/completions and /v1/chat/completions."""

    def __init__(self, name: str, model: str = "fake") -> None:
        self.name = name
        self.model = model
        self.requests = 0
        self._models = orjson.dumps({"object": "list", "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": "kvmesh-fake"}]})

    def handle(self, request: HttpRequest, conn: ClientConnection) -> None:
        if request.method == "GET":
            body = self._models if request.path == "/v1/models" else b'{"status":"ok"}'
            conn.respond(200, body)
            return
        self.requests += 1
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            conn.respond(400, b'{"error":{"message":"bad json"}}')
            return
        delay_s = float(body.get("fake_delay_ms", 0)) / 1000.0
        answer = self._stream if body.get("stream") else self._complete
        if delay_s > 0:
            asyncio.get_running_loop().call_later(delay_s, answer, conn, body)
        else:
            answer(conn, body)

    def _complete(self, conn: ClientConnection, body: dict) -> None:
        payload = orjson.dumps({
            "id": f"cmpl-{self.requests}", "object": "text_completion", "created": 0,
            "model": body.get("model"), "system_fingerprint": self.name,
            "choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        conn.respond(200, payload)

    def _stream(self, conn: ClientConnection, body: dict) -> None:
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(int(body.get("fake_events", 4))):
            event = b"data: " + orjson.dumps({"id": "s", "system_fingerprint": self.name,
                                               "choices": [{"index": 0, "text": f"t{i}"}]}) + b"\n\n"
            conn.write(b"%x\r\n%s\r\n" % (len(event), event))
        done = b"data: [DONE]\n\n"
        conn.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        conn.finish()


async def serve(port: int, name: str, model: str) -> None:
    backend = FakeBackend(name, model)
    server = await start_server(backend.handle, "127.0.0.1", port, max_body_bytes=64 << 20)
    print(f"fake backend {name} on {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", default="fake")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port, args.name, args.model))


if __name__ == "__main__":
    main()
