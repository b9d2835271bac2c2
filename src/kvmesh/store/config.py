"""Configuration of one ``kvmesh store`` server process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 9200
"""TCP port of ``kvmesh store`` when none is given."""

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class StoreConfig:
    """Everything a store server needs to know at startup; validated on creation."""

    host: str = "127.0.0.1"
    """Address the TCP listener binds to."""
    port: int = DEFAULT_PORT
    """TCP port (0: any free port, reported by the server after it binds)."""
    memory_size_bytes: int = 4 * GiB
    """Hard byte budget of the memory tier; it is the size of the shared-memory arena."""
    disk_path: Path | None = None
    """Directory of the disk tier; ``None`` disables the disk tier."""
    disk_size_bytes: int = 100 * GiB
    """Byte budget of the disk tier (file payloads plus their headers)."""
    auth_token: str | None = None
    """Shared secret every client must present before anything else; ``None``: no auth."""
    metrics_port: int | None = None
    """Port of the Prometheus ``/metrics`` listener on ``host``; ``None`` disables it."""
    max_value_size_bytes: int = 256 * MiB
    """Largest single value a PUT may carry; bigger ones are refused."""
    max_request_size_bytes: int = 1 * GiB
    """Largest request body (all keys and values of one batch); bigger requests are refused."""
    max_batch_keys: int = 65536
    """Most keys in one batch request."""
    lease_ttl_s: float = 10.0
    """How long a shared-memory lease pins its entries unless released first."""
    shm_enabled: bool = True
    """Offer the same-host shared-memory read path (leases) to clients."""
    prefault: bool = False
    """Allocate every page of the memory tier at start (slower start, RAM committed up
    front, no page faults while serving: PUT into fresh memory is ~10x faster)."""
    shm_dir: Path = Path("/dev/shm")
    """Directory of the shared-memory segment file (must be a tmpfs for zero-copy)."""
    shutdown_grace_s: float = 5.0
    """On SIGTERM, how long in-flight requests may take before connections are cut."""

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must be non-empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.memory_size_bytes < MiB:
            raise ValueError(f"memory_size_bytes must be >= 1MiB, got {self.memory_size_bytes}")
        if self.disk_path is not None and self.disk_size_bytes < MiB:
            raise ValueError(f"disk_size_bytes must be >= 1MiB, got {self.disk_size_bytes}")
        if self.auth_token is not None and not self.auth_token:
            raise ValueError("auth_token must be non-empty when set")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be in [0, 65535], got {self.metrics_port}")
        if not 1 <= self.max_value_size_bytes <= self.max_request_size_bytes:
            raise ValueError("max_value_size_bytes must be in [1, max_request_size_bytes]")
        if not 1 <= self.max_batch_keys <= 1 << 20:
            raise ValueError(f"max_batch_keys must be in [1, 2**20], got {self.max_batch_keys}")
        if self.lease_ttl_s <= 0:
            raise ValueError(f"lease_ttl_s must be > 0, got {self.lease_ttl_s}")
        if self.shutdown_grace_s < 0:
            raise ValueError(f"shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}")
