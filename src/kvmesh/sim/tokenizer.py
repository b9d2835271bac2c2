"""Tokenizers and chat rendering for the simulator.

Without a model directory the simulator uses :class:`WordTokenizer`: every word
and every punctuation mark is one token, and its id is a seeded xxhash of the
text, so the same text gives the same ids in every process (never Python's
``hash()``). That is close enough to BPE counts for latency modelling, and
cheap enough for 64 workers on 2 cores. With ``--model-dir`` the model's own
``tokenizer.json`` is used, so router and simulator agree with a real worker.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import xxhash

from kvmesh.common.chat_render import ChatTemplate, render_chat

__all__ = [
    "ChatTemplate", "HFTokenizer", "SimTokenizer", "WordTokenizer", "count_tokens",
    "load_chat_template", "load_tokenizer", "render_chat",
]

_WORD_RE = re.compile(r"\w+|[^\w\s]")
_VOCAB = 32_000
_SPECIAL = 16  # ids below this are reserved, as in most vocabularies


class SimTokenizer(ABC):
    """Text -> token ids. Implementations are deterministic and process-independent."""

    @abstractmethod
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``. Like vLLM: completions add the model's special tokens
        (BOS), chat prompts do not (the chat template already has them)."""


class WordTokenizer(SimTokenizer):
    """One token per word or punctuation mark; ids from xxh32 with a fixed seed."""

    def __init__(self, vocab_size: int = _VOCAB) -> None:
        if vocab_size <= _SPECIAL:
            raise ValueError(f"vocab_size must be > {_SPECIAL}, got {vocab_size}")
        self.vocab_size = vocab_size
        self._memo: dict[str, int] = {}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        memo = self._memo
        out: list[int] = []
        for piece in _WORD_RE.findall(text):
            tid = memo.get(piece)
            if tid is None:
                tid = _SPECIAL + xxhash.xxh32_intdigest(piece.encode("utf-8"), seed=0) % (self.vocab_size - _SPECIAL)
                if len(memo) < 1 << 20:  # bound the memo; the vocabulary of a benchmark is small
                    memo[piece] = tid
            out.append(tid)
        return out


def count_tokens(text: str) -> int:
    """How many tokens :class:`WordTokenizer` makes of ``text`` (without building them)."""
    return sum(1 for _ in _WORD_RE.finditer(text))


class HFTokenizer(SimTokenizer):
    """A model directory's ``tokenizer.json`` through the ``tokenizers`` library."""

    def __init__(self, model_dir: str | Path) -> None:
        from tokenizers import Tokenizer

        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise ValueError(f"--model-dir {model_dir}: no tokenizer.json there")
        self._tok = Tokenizer.from_file(str(path))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)


def load_tokenizer(model_dir: str | Path | None) -> SimTokenizer:
    """The model's tokenizer when a directory is given, else :class:`WordTokenizer`."""
    return HFTokenizer(model_dir) if model_dir else WordTokenizer()


def load_chat_template(model_dir: str | Path | None) -> ChatTemplate | None:
    """The model's chat template, if a directory is given and it has one."""
    return ChatTemplate.from_model_dir(model_dir) if model_dir else None
