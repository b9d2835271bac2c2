"""ConnectorConfig: extra_config over env over defaults, validation."""

from __future__ import annotations

import pytest

from kvmesh.connector.config import ConnectorConfig


def test_defaults() -> None:
    cfg = ConnectorConfig.load({}, env={})
    assert cfg == ConnectorConfig()
    assert (
        cfg.chunk_size,
        cfg.l1_size_bytes,
        cfg.eviction_policy,
        cfg.l2_url,
        cfg.l2_deadline_s,
    ) == (256, 4 << 30, "lru", None, 0.05)
    assert cfg.effective_min_hit_tokens == 256


def test_extra_config_wins_over_env_and_units_parse() -> None:
    env = {
        "KVMESH_L1_SIZE": "1GiB",
        "KVMESH_CHUNK_SIZE": "512",
        "KVMESH_L2_URL": "redis://h:1/0",
        "KVMESH_L2_DEADLINE": "20ms",
        "KVMESH_EVICTION_POLICY": "lfu",
    }
    cfg = ConnectorConfig.load({"l1_size": "256MiB", "chunk_size": 128}, env=env)
    assert cfg.l1_size_bytes == 256 << 20
    assert cfg.chunk_size == 128
    assert cfg.l2_url == "redis://h:1/0"
    assert cfg.l2_deadline_s == pytest.approx(0.02)
    assert cfg.eviction_policy == "lfu"


def test_to_extra_config_round_trips() -> None:
    cfg = ConnectorConfig(
        chunk_size=128,
        l1_size_bytes=1 << 20,
        l2_url="kvmesh://127.0.0.1:7000",
        kv_events_endpoint="tcp://127.0.0.1:5557",
        kv_events_source="http://w:8000",
        hash_seed=7,
        min_hit_tokens=512,
        metrics_port=9100,
        model_id="demo",
    )
    assert ConnectorConfig.load(cfg.to_extra_config(), env={}) == cfg


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": True}, "boolean"),
        ({"l1_size": "4XB"}, "l1_size"),
        ({"l2_url": "localhost:6379"}, "l2_url"),
        ({"l2_deadline": "0"}, "l2_deadline_s"),
        ({"kv_events_endpoint": "5557"}, "kv_events_endpoint"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"no_such_key": 1}, "unknown kvmesh connector config keys"),
    ],
)
def test_invalid_values_raise_value_error_naming_the_key(extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectorConfig.load(extra, env={})


def test_chunk_size_must_tile_vllm_blocks() -> None:
    ConnectorConfig(chunk_size=256).check_block_size(128)
    with pytest.raises(ValueError, match="multiple of vLLM's block size 128"):
        ConnectorConfig(chunk_size=192).check_block_size(128)
