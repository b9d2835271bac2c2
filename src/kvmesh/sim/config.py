"""Configuration of one simulated worker."""

from __future__ import annotations

from dataclasses import dataclass

from kvmesh.common.hashing import DEFAULT_CHUNK_SIZE, DEFAULT_HASH_SEED, ChainSpec
from kvmesh.sim.presets import DEFAULT_PRESET, SimPreset, get_preset


@dataclass(frozen=True)
class SimConfig:
    """Everything a :class:`kvmesh.sim.engine.SimEngine` and its server need."""

    preset: SimPreset
    """Latency and capacity model (a named preset, possibly with flag overrides)."""
    model_id: str = "demo"
    """Served model name (``/v1/models``) and chain-hash model id."""
    host: str = "127.0.0.1"
    """Address to bind; loopback by default."""
    port: int = 8100
    """TCP port to serve on (0: any free port)."""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    """Tokens per fleet chunk (KV events, L1/L2 keys); must match router and store."""
    block_size: int = 16
    """Tokens per engine prefix-cache block (vLLM's default block size)."""
    hash_seed: int = DEFAULT_HASH_SEED
    """Chain-hash seed; every process of a fleet must agree."""
    default_max_tokens: int = 128
    """Output length when a request gives no ``max_tokens``."""
    max_model_len: int = 131_072
    """Longest prompt + output accepted; longer requests get a 400."""
    model_dir: str | None = None
    """Model directory whose tokenizer (and chat template) to use; None: the word tokenizer."""
    l1_size_bytes: int = 0
    """Byte budget of the L1 (CPU memory) tier; 0 disables offload to L1."""
    l2_url: str | None = None
    """L2 backend URL (``kvmesh://``, ``redis://``, ``memory://``); None: no L2."""
    kv_events_endpoint: str | None = None
    """ZeroMQ endpoint to publish KV events on (for example ``tcp://127.0.0.1:5557``)."""
    public_url: str | None = None
    """The URL clients reach this worker at, used as the KV event source; default from host:port."""

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.chunk_size % self.block_size:
            raise ValueError(
                f"chunk_size ({self.chunk_size}) must be a multiple of block_size ({self.block_size})"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be >= 1, got {self.default_max_tokens}")
        if self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {self.max_model_len}")
        if self.l1_size_bytes < 0:
            raise ValueError(f"l1_size_bytes must be >= 0, got {self.l1_size_bytes}")
        ChainSpec(self.model_id, self.chunk_size, self.hash_seed)  # validates the rest

    @classmethod
    def from_preset(cls, name: str = DEFAULT_PRESET, **kwargs: object) -> SimConfig:
        """A config from a named preset; ``ValueError`` for an unknown name."""
        return cls(preset=get_preset(name), **kwargs)  # type: ignore[arg-type]

    @property
    def chain_spec(self) -> ChainSpec:
        """Chain spec of fleet chunks."""
        return ChainSpec(self.model_id, self.chunk_size, self.hash_seed)

    @property
    def block_spec(self) -> ChainSpec:
        """Chain spec of engine blocks (same chain, block-sized chunks)."""
        return ChainSpec(self.model_id, self.block_size, self.hash_seed)

    @property
    def source_url(self) -> str:
        """This worker's endpoint as the router knows it."""
        return self.public_url or f"http://{self.host}:{self.port}"
