"""Build Llama-architecture model directories locally, with no downloads.

``kvmesh model create DIR --preset tiny|demo`` writes::

    DIR/
      config.json              LlamaConfig (transformers), bf16
      model.safetensors        real random weights, written by save_pretrained
      generation_config.json   bos/eos ids
      tokenizer.json           byte-level BPE trained here on the shipped corpus
      tokenizer_config.json    PreTrainedTokenizerFast + the chat template
      special_tokens_map.json

The tokenizer half (:func:`write_tokenizer`) needs only ``tokenizers`` so the
router's tests can build a tokenizer without torch; the weights half
(:func:`write_weights`) imports torch and transformers lazily.

Random weights are deliberate: greedy decoding is still deterministic, so a
test can compare outputs with and without KV reuse bit for bit, which is
what the correctness tests need (``load_format=dummy`` would skip the real
weight-loading path that users hit).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
EOT = "<|eot_id|>"
HEADER_START = "<|start_header_id|>"
HEADER_END = "<|end_header_id|>"
SPECIAL_TOKENS = (BOS, EOS, HEADER_START, HEADER_END, EOT)

# Llama-3 style: every message is framed by header tokens and closed by <|eot_id|>.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)


@dataclass(frozen=True)
class ModelPreset:
    """Shape of a generated Llama model."""

    num_layers: int
    """Transformer blocks."""
    hidden_size: int
    """Model width."""
    num_heads: int
    """Query heads; head_dim = hidden_size // num_heads."""
    num_kv_heads: int
    """KV heads (grouped-query attention when below num_heads)."""
    intermediate_size: int
    """MLP width."""
    target_vocab_size: int
    """Vocabulary the BPE trainer aims for; the model uses what it reaches."""
    max_position_embeddings: int
    """Longest context the model accepts."""
    initializer_range: float = 0.02
    """Std of the random weights."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.head_dim < 32:
            raise ValueError(f"head_dim must be >= 32 (vLLM CPU attention), got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        """Elements per attention head."""
        return self.hidden_size // self.num_heads


PRESETS: dict[str, ModelPreset] = {
    # Smallest shape vLLM's CPU attention accepts (head_dim 32): fast to start and decode.
    "tiny": ModelPreset(
        num_layers=2,
        hidden_size=128,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=256,
        target_vocab_size=2048,
        max_position_embeddings=16384,
    ),
    # The measured demo shape (landscape.md §5): 8 layers, hidden 512, GQA 8/4, head_dim 64.
    "demo": ModelPreset(
        num_layers=8,
        hidden_size=512,
        num_heads=8,
        num_kv_heads=4,
        intermediate_size=1536,
        target_vocab_size=4096,
        max_position_embeddings=16384,
    ),
}
"""Preset name -> shape."""


def corpus_text() -> str:
    """The training text shipped with the package."""
    return (resources.files("kvmesh.connector") / "data" / "tokenizer_corpus.txt").read_text(
        "utf-8"
    )


def write_tokenizer(out_dir: Path, vocab_size: int, max_length: int) -> int:
    """Train a byte-level BPE tokenizer and write the HF tokenizer files; returns its vocab size.

    Byte-level pre-tokenization means any UTF-8 text encodes without unknown
    tokens, so benchmark prompts need not come from the training corpus.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_text().splitlines(), trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": EOS,
            "add_bos_token": False,
            "model_max_length": max_length,
            "clean_up_tokenization_spaces": False,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    _write_json(
        out_dir / "special_tokens_map.json", {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS}
    )
    return tokenizer.get_vocab_size()


def write_weights(out_dir: Path, preset: ModelPreset, vocab_size: int, seed: int) -> None:
    """Write config.json and random bf16 weights with ``save_pretrained``."""
    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        num_key_value_heads=preset.num_kv_heads,
        head_dim=preset.head_dim,
        max_position_embeddings=preset.max_position_embeddings,
        initializer_range=preset.initializer_range,
        bos_token_id=tok.token_to_id(BOS),
        eos_token_id=[tok.token_to_id(EOS), tok.token_to_id(EOT)],
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(out_dir), safe_serialization=True)


def create_model(out_dir: Path, preset_name: str, seed: int = 0) -> dict[str, object]:
    """Write a complete model directory; returns a summary (the preset plus the vocab size)."""
    preset = PRESETS.get(preset_name)
    if preset is None:
        raise ValueError(f"unknown preset {preset_name!r}; use one of {sorted(PRESETS)}")
    vocab_size = write_tokenizer(out_dir, preset.target_vocab_size, preset.max_position_embeddings)
    write_weights(out_dir, preset, vocab_size, seed)
    summary: dict[str, object] = {"preset": preset_name, "seed": seed, "vocab_size": vocab_size}
    summary.update(asdict(preset))
    summary["head_dim"] = preset.head_dim
    return summary


def is_model_dir(path: Path) -> bool:
    """True if ``path`` looks like a Hugging Face model directory (has config.json)."""
    return (path / "config.json").is_file()


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
