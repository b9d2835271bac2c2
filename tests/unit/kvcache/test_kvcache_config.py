"""CacheConfig validation and parsing; the circuit breaker's state machine."""

from __future__ import annotations

import pytest

from kvmesh.kvcache.circuit_breaker import BreakerState, CircuitBreaker
from kvmesh.kvcache.config import CacheConfig


def test_defaults() -> None:
    cfg = CacheConfig()
    assert (cfg.l1_size_bytes, cfg.eviction_policy, cfg.chunk_size, cfg.l2_url) == (
        4 << 30,
        "lru",
        256,
        None,
    )
    assert cfg.l2_deadline_s == 0.05
    # 32 MiB at the 1 GB/s floor: 50 ms + 33.6 ms
    assert cfg.data_deadline_s(32 << 20) == pytest.approx(0.05 + (32 << 20) / 1e9)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"l1_size_bytes": -1}, "l1_size_bytes must be >= 0"),
        ({"eviction_policy": "mru"}, "eviction_policy must be one of"),
        ({"chunk_size": 0}, "chunk_size must be in"),
        ({"l2_url": "localhost:6379"}, "l2_url must look like scheme://"),
        ({"l2_deadline_s": 0}, "l2_deadline_s must be in"),
        ({"l2_write_queue_chunks": 0}, "l2_write_queue_chunks must be >= 1"),
        ({"l2_breaker_failure_threshold": 0}, "l2_breaker_failure_threshold must be >= 1"),
        ({"l2_breaker_reset_s": 0.0}, "l2_breaker_reset_s must be > 0"),
    ],
)
def test_invalid_values_raise_value_error(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CacheConfig(**changes)


def test_from_dict_parses_units_and_rejects_unknown_keys() -> None:
    cfg = CacheConfig.from_dict(
        {
            "l1_size_bytes": "512MiB",
            "l2_deadline_s": "20ms",
            "l2_url": "redis://127.0.0.1:6379/2",
            "chunk_size": "128",
            "eviction_policy": "lfu",
            "l2_min_bandwidth_bytes_per_s": "2GB",
        }
    )
    assert cfg == CacheConfig(
        l1_size_bytes=512 << 20,
        l2_deadline_s=0.02,
        l2_url="redis://127.0.0.1:6379/2",
        chunk_size=128,
        eviction_policy="lfu",
        l2_min_bandwidth_bytes_per_s=2_000_000_000,
    )
    with pytest.raises(ValueError, match=r"unknown cache config keys \['l1_size'\]"):
        CacheConfig.from_dict({"l1_size": "1GiB"})
    with pytest.raises(ValueError, match="cache config l1_size_bytes: invalid size '4XB'"):
        CacheConfig.from_dict({"l1_size_bytes": "4XB"})


def test_from_env_reads_prefixed_field_names() -> None:
    env = {
        "KVMESH_L1_SIZE_BYTES": "1GiB",
        "KVMESH_L2_URL": "",
        "KVMESH_EVICTION_POLICY": "fifo",
        "OTHER_L1_SIZE_BYTES": "5",
        "KVMESH_L2_DEADLINE_S": "0.1",
    }
    cfg = CacheConfig.from_env(environ=env)
    assert (cfg.l1_size_bytes, cfg.l2_url, cfg.eviction_policy, cfg.l2_deadline_s) == (
        1 << 30,
        None,
        "fifo",
        0.1,
    )
    assert CacheConfig.from_env("OTHER_", env).l1_size_bytes == 5
    assert CacheConfig().replace(chunk_size=16).chunk_size == 16


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(3, 1.0, clock=clock, on_change=changes.append)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the streak
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert changes == [BreakerState.OPEN] and breaker.times_opened == 1


def test_breaker_half_open_trial_then_close_or_reopen() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 2.0, clock=clock)
    breaker.record_failure()
    clock.now += 1.999
    assert not breaker.allow()
    clock.now += 0.001
    assert breaker.allow()  # the one trial
    assert breaker.state is BreakerState.HALF_OPEN and not breaker.allow()
    breaker.record_failure()  # trial failed: open again, timer restarts
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 2.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    assert breaker.times_opened == 1


def test_breaker_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold must be >= 1"):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError, match="reset_interval_s must be > 0"):
        CircuitBreaker(1, 0)
