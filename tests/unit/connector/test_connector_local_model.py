"""Local model directories: the tokenizer half needs no torch; presets are valid for vLLM CPU."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest
from tokenizers import Tokenizer

from kvmesh.cli import main
from kvmesh.connector.local_model import (
    BOS,
    EOT,
    PRESETS,
    SPECIAL_TOKENS,
    ModelPreset,
    create_model,
    write_tokenizer,
)


def test_presets_fit_vllm_cpu_attention() -> None:
    assert PRESETS["tiny"].head_dim >= 32
    demo = PRESETS["demo"]
    assert (
        demo.num_layers,
        demo.hidden_size,
        demo.num_heads,
        demo.num_kv_heads,
        demo.head_dim,
    ) == (8, 512, 8, 4, 64)
    with pytest.raises(ValueError, match="head_dim must be >= 32"):
        ModelPreset(2, 64, 4, 2, 128, 512, 1024)


def test_tokenizer_is_trained_locally_and_round_trips_any_text(tmp_path: Path) -> None:
    vocab = write_tokenizer(tmp_path, vocab_size=1024, max_length=4096)
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tok.get_vocab_size() == vocab
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    text = "Caches keep KV — even for text never seen: Zürich, 東京, 42!"
    assert tok.decode(tok.encode(text).ids) == text
    again = tmp_path / "again"
    write_tokenizer(again, vocab_size=1024, max_length=4096)
    assert (again / "tokenizer.json").read_bytes() == (tmp_path / "tokenizer.json").read_bytes()


def test_chat_template_renders_llama3_style_frames(tmp_path: Path) -> None:
    write_tokenizer(tmp_path, vocab_size=512, max_length=4096)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert (cfg["bos_token"], cfg["tokenizer_class"], cfg["model_max_length"]) == (
        BOS,
        "PreTrainedTokenizerFast",
        4096,
    )
    rendered = (
        jinja2.Environment()
        .from_string(cfg["chat_template"])
        .render(
            messages=[{"role": "user", "content": " hi "}],
            add_generation_prompt=True,
            bos_token=BOS,
        )
    )
    assert rendered == (
        f"{BOS}<|start_header_id|>user<|end_header_id|>\n\nhi{EOT}"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        create_model(tmp_path, "huge")


def test_cli_rejects_a_bad_preset_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit):
        main(["model", "create", str(tmp_path / "m"), "--preset", "huge"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --preset:" in err


def test_create_writes_real_weights_with_save_pretrained(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="`make vllm` installs transformers and torch")
    from safetensors import safe_open

    summary = create_model(tmp_path / "tiny", "tiny", seed=1)
    config = json.loads((tmp_path / "tiny" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["vocab_size"] == summary["vocab_size"]
    assert (config["num_hidden_layers"], config["head_dim"]) == (2, 32)
    with safe_open(str(tmp_path / "tiny" / "model.safetensors"), "pt") as f:
        weight = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
    assert str(weight.dtype) == "torch.bfloat16" and weight.shape == (128, 128)
    assert float(weight.float().std()) == pytest.approx(0.02, rel=0.1)
