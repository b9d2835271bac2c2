"""Pure parts of ``kvmesh bench ttft``: flags, KV sizing, the Markdown table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmesh.bench.ttft_bench import TTFTRow, kv_bytes_per_token, to_markdown
from kvmesh.cli import main


def test_kv_bytes_per_token_from_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "num_hidden_layers": 8,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
                "hidden_size": 512,
                "torch_dtype": "bfloat16",
            }
        )
    )
    assert kv_bytes_per_token(tmp_path) == 2 * 8 * 4 * 64 * 2


def test_markdown_table_has_one_row_per_context() -> None:
    row = TTFTRow(
        context_tokens=8192,
        suffix_tokens=16,
        cold_ms=9400.0,
        l1_hit_ms=245.0,
        l2_hit_ms=757.0,
        prefix_cache_hit_ms=196.0,
        floor_ms=204.0,
        kv_bytes=64 << 20,
        memcpy_gbps=8.5,
        outputs_identical=True,
    )
    lines = to_markdown([row]).splitlines()
    assert lines[0].startswith("| context | cold ms | L1 hit ms |")
    assert lines[2] == "| 8192 (+16) | 9400 | 245.0 | 757.0 | 196.0 | 204.0 | 38.4x | 1.20x | yes |"


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--context", "1k"], "--context"),
        (["--context", "0"], "--context"),
        (["--max-tokens", "0"], "--max-tokens"),
    ],
)
def test_bad_flags_are_one_line(
    tmp_path: Path, flags: list[str], flag: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "ttft", "--model", str(tmp_path), *flags])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {flag}:" in err


def test_model_without_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "ttft", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --model:" in err
