"""``kvmesh worker``: the vLLM command it builds, and its one-line flag errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kvmesh.cli import main
from kvmesh.connector.config import ConnectorConfig
from kvmesh.connector.worker import WorkerConfig, build_command, kv_transfer_config


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "demo"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


def test_command_uses_the_module_entry_point_and_configures_the_connector(model_dir: Path) -> None:
    connector = ConnectorConfig(
        chunk_size=128,
        l1_size_bytes=1 << 30,
        l2_url="redis://127.0.0.1:6379/0",
        metrics_port=9109,
        kv_events_endpoint="tcp://127.0.0.1:5557",
    )
    config = WorkerConfig(
        model=model_dir,
        connector=connector,
        port=8123,
        kv_cache_space_gib=3,
        cpu_threads_bind="0-1",
        enable_prefix_caching=False,
        engine_kv_events_endpoint="ipc:///tmp/kv.sock",
        extra_vllm_args=("--max-num-seqs", "4"),
    )
    argv, env = build_command(config)
    assert argv[:3] == [sys.executable, "-m", "kvmesh.connector.serve"]
    transfer = json.loads(argv[argv.index("--kv-transfer-config") + 1])
    assert transfer == {
        "kv_connector": "KVMeshConnector",
        "kv_connector_module_path": "kvmesh.connector.vllm",
        "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {
            "chunk_size": 128,
            "l1_size": 1 << 30,
            "eviction_policy": "lru",
            "l2_url": "redis://127.0.0.1:6379/0",
            "l2_deadline": 0.05,
            "kv_events_endpoint": "tcp://127.0.0.1:5557",
            "kv_events_source": "http://127.0.0.1:8123",
            "hash_seed": 0,
            "min_hit_tokens": 0,
            "metrics_port": 9109,
        },
    }
    assert argv[argv.index("--served-model-name") + 1] == "demo"
    assert json.loads(argv[argv.index("--kv-events-config") + 1]) == {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": "ipc:///tmp/kv.sock",
        "topic": "kv@demo",
    }
    assert "--enforce-eager" in argv and "--no-enable-prefix-caching" in argv
    assert "--enable-prompt-tokens-details" in argv
    assert argv[-2:] == ["--max-num-seqs", "4"]
    assert env == {
        "VLLM_CPU_KVCACHE_SPACE": "3",
        "VLLM_CPU_OMP_THREADS_BIND": "0-1",
        "KVMESH_CONNECTOR_METRICS_PORT": "9109",
    }


def test_kv_events_source_defaults_to_the_serving_url(model_dir: Path) -> None:
    config = WorkerConfig(model=model_dir, connector=ConnectorConfig(), port=9000, host="127.0.0.1")
    assert (
        kv_transfer_config(config)["kv_connector_extra_config"]["kv_events_source"]
        == "http://127.0.0.1:9000"
    )


def test_config_rejects_a_non_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a model directory"):
        WorkerConfig(model=tmp_path, connector=ConnectorConfig())


def test_print_command_passes_extra_args_after_double_dash(
    model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        main(["worker", "--model", str(model_dir), "--print-command", "--", "--max-num-seqs", "2"])
        == 0
    )
    out = capsys.readouterr().out.strip()
    assert out.endswith("--enforce-eager --max-num-seqs 2")
    assert "VLLM_CPU_KVCACHE_SPACE=2" in out


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--l1-size", "4XB"], "--l1-size"),
        (["--l2-url", "localhost:6379"], "--l2-url"),
        (["--l2-deadline", "soon"], "--l2-deadline"),
        (["--chunk-size", "0"], "--chunk-size"),
        (["--port", "70000"], "--port"),
    ],
)
def test_bad_flags_print_one_line_naming_the_flag(
    model_dir: Path, flags: list[str], flag: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["worker", "--model", str(model_dir), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {flag}:" in err


def test_missing_model_dir_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["worker", "--model", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --model:" in err
