"""Workload model: conversations of turns, replayed turn by turn.

Every turn's request carries the conversation so far: the system prompt, each
earlier user message with its *reference* answer, then the new user message.
Using the reference answers (not what the engine said) keeps every request of
a seeded workload byte-identical across fleet configurations, which is what
makes a side-by-side comparison fair.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Turn:
    """One user message and the answer it is replayed with."""

    user: str
    """The user's message."""
    answer: str
    """Reference answer, appended to the history for the next turn."""
    max_tokens: int
    """Output tokens requested for this turn."""


@dataclass(frozen=True)
class Conversation:
    """A sequence of turns behind an optional system prompt."""

    conv_id: str
    turns: tuple[Turn, ...]
    system: str | None = None

    def messages(self, turn_index: int) -> list[dict[str, str]]:
        """The chat messages of turn ``turn_index``: everything so far plus the new message."""
        if not 0 <= turn_index < len(self.turns):
            raise ValueError(f"turn_index {turn_index} out of range [0, {len(self.turns)})")
        out: list[dict[str, str]] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        for turn in self.turns[:turn_index]:
            out.append({"role": "user", "content": turn.user})
            out.append({"role": "assistant", "content": turn.answer})
        out.append({"role": "user", "content": self.turns[turn_index].user})
        return out


@dataclass(frozen=True)
class WorkloadOptions:
    """Knobs every workload understands (each uses the ones that apply)."""

    seed: int = 0
    """Seed of every random choice; the same seed gives the same requests."""
    length_scale: float = 1.0
    """Multiplies synthetic prompt lengths (documents, system prompts, histories); 0.1 runs on CPU."""
    max_output_tokens: int = 128
    """Cap on any turn's output tokens."""
    context: str = "8k"
    """longdoc only: document size class, ``8k`` or ``64k``."""
    max_prompt_tokens: int = 8192
    """sharegpt only: a conversation ends before the turn whose prompt would exceed this."""

    def __post_init__(self) -> None:
        if not 0 < self.length_scale <= 100:
            raise ValueError(f"length_scale must be in (0, 100], got {self.length_scale}")
        if self.max_output_tokens < 1:
            raise ValueError(f"max_output_tokens must be >= 1, got {self.max_output_tokens}")
        if self.context not in ("8k", "64k"):
            raise ValueError(f"context must be 8k or 64k, got {self.context!r}")
        if self.max_prompt_tokens < 16:
            raise ValueError(f"max_prompt_tokens must be >= 16, got {self.max_prompt_tokens}")

    def scaled(self, tokens: int) -> int:
        """``tokens`` times the length scale, at least 1."""
        return max(1, round(tokens * self.length_scale))


class Workload(ABC):
    """A named, seeded source of conversations.

    Contract: :meth:`conversations` yields the same conversations in the same
    order for the same options, in any process; it may be infinite (the
    runner stops at its request or time budget).
    """

    name: str

    def __init__(self, options: WorkloadOptions) -> None:
        self.options = options

    @abstractmethod
    def conversations(self) -> Iterator[Conversation]:
        """Conversations in replay order."""


WORKLOADS: dict[str, Callable[[WorkloadOptions], Workload]] = {}
"""Workload name -> class; filled by :func:`register_workload`."""


def register_workload(cls: type[Workload]) -> type[Workload]:
    """Class decorator adding a workload to :data:`WORKLOADS` under ``cls.name``."""
    WORKLOADS[cls.name] = cls
    return cls


def create_workload(name: str, options: WorkloadOptions) -> Workload:
    """The workload called ``name``; ``ValueError`` listing the choices otherwise."""
    import kvmesh.bench.workloads  # noqa: F401  (registers the built-ins)

    try:
        factory = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {sorted(WORKLOADS)}") from None
    return factory(options)


# -- synthetic text ---------------------------------------------------------

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "an", "el", "or", "ix", "um", "be", "da", "fe")


def make_vocabulary() -> tuple[str, ...]:
    """Words for synthetic text, the same in every process.

    The distinct lowercase words of the corpus the built-in models' tokenizer
    was trained on (``kvmesh model create``), so a word is one token for the
    simulator's word tokenizer *and* about one token (1.06 measured) for the
    built-in BPE: a prompt of N words is about N tokens on either engine.
    Pseudo-words are the fallback when that corpus is not installed.
    """
    try:
        from importlib import resources

        text = (resources.files("kvmesh.connector") / "data" / "tokenizer_corpus.txt").read_text("utf-8")
        words = sorted({w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 1})
        if len(words) >= 100:
            return tuple(words)
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    n = len(_SYLLABLES)
    return tuple(_SYLLABLES[i % n] + _SYLLABLES[(i // n) % n] for i in range(n * n))


VOCABULARY = make_vocabulary()


def synthetic_text(rng: np.random.Generator, num_words: int) -> str:
    """``num_words`` seeded words: exactly ``num_words`` tokens for the word tokenizer."""
    idx = rng.integers(0, len(VOCABULARY), size=num_words)
    return " ".join(VOCABULARY[i] for i in idx)
