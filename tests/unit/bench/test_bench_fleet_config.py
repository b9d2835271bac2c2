from __future__ import annotations

from pathlib import Path

import pytest

from kvmesh.bench.fleet import FleetConfig
from kvmesh.bench.launchers import ENGINES, SimLauncher, WorkerSlot


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"workers": 0}, "workers"), ({"engine": "tgi"}, "engine"), ({"routing_strategy": "random"}, "strategy"),
     ({"l2": "s3"}, "l2"), ({"l1_size_bytes": -1}, "l1_size_bytes"), ({"port": 70000}, "port")],
)
def test_fleet_config_validates(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FleetConfig(**changes)  # type: ignore[arg-type]


def test_sim_launcher_packs_workers_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVMESH_MODEL_CACHE", str(tmp_path / "models"))
    cfg = FleetConfig(engine="sim", workers=5, sim_workers_per_process=2, l1_size_bytes=1 << 20)
    slots = [WorkerSlot(i, 9000 + i, 9100 + i) for i in range(5)]
    commands = list(SimLauncher(cfg).commands(slots, "kvmesh://127.0.0.1:1", tmp_path))
    assert [name for name, *_ in commands] == ["sim-0", "sim-1", "sim-2"]
    assert [[s.index for s in group] for _, group, _, _ in commands] == [[0, 1], [2, 3], [4]]
    argv = commands[1][2]
    assert argv[argv.index("--ports") + 1] == "9002,9003"
    assert argv[argv.index("--kv-events-ports") + 1] == "9102,9103"
    assert argv[argv.index("--l2-url") + 1] == "kvmesh://127.0.0.1:1"
    tokenizer_dir = Path(argv[argv.index("--model-dir") + 1])
    assert (tokenizer_dir / "tokenizer.json").is_file()
    assert SimLauncher(cfg).router_args() == ["--model-dir", str(tokenizer_dir)]
    assert sorted(ENGINES) == ["sim", "vllm"]
