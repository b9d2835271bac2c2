"""Synthetic workloads: multiround, longdoc and shared-prompt.

Lengths are in word-tokenizer tokens (one pseudo-word = one token for the
simulator); ``--length-scale`` shrinks the long parts so a run fits on CPU.
Default lengths follow the shapes users test with:

- ``multiround``: production-stack's multi-round QA benchmark shape: a shared
  system prompt (1,000 tokens), a per-user history prefix (2,000), users asking
  rounds of short questions (~20 tokens) with 100-token answers.
- ``longdoc``: several questions about each long document, 8K-class (7,600
  tokens) or 64K-class (63,000 tokens) contexts, as in HyperPod's 8K/64K results.
- ``shared-prompt``: many single- or few-turn users behind one long (4,000
  token) system prompt: the hot-spotting case.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from kvmesh.bench.workloads.base import (
    Conversation,
    Turn,
    Workload,
    WorkloadOptions,
    register_workload,
    synthetic_text,
)


def _rng(options: WorkloadOptions, salt: int) -> np.random.Generator:
    # Salting per workload keeps two workloads with the same seed unrelated.
    return np.random.default_rng([options.seed, salt])


@register_workload
class MultiRoundWorkload(Workload):
    """Users x rounds behind a shared system prompt and a per-user history."""

    name = "multiround"
    SYSTEM_TOKENS = 1000
    USER_INFO_TOKENS = 2000
    QUESTION_TOKENS = 20
    ANSWER_TOKENS = 100
    ROUNDS = 5

    def conversations(self) -> Iterator[Conversation]:
        opts = self.options
        rng = _rng(opts, 1)
        system = "You are a helpful assistant. " + synthetic_text(rng, opts.scaled(self.SYSTEM_TOKENS))
        answer_tokens = min(self.ANSWER_TOKENS, opts.max_output_tokens)
        user = 0
        while True:
            info = synthetic_text(rng, opts.scaled(self.USER_INFO_TOKENS))
            turns = []
            for round_index in range(self.ROUNDS):
                question = synthetic_text(rng, self.QUESTION_TOKENS)
                if round_index == 0:
                    question = f"About me: {info}\nQuestion: {question}"
                turns.append(Turn(question, synthetic_text(rng, answer_tokens), answer_tokens))
            yield Conversation(f"multiround-{user}", tuple(turns), system)
            user += 1


@register_workload
class LongDocWorkload(Workload):
    """Several questions per long document."""

    name = "longdoc"
    DOC_TOKENS = {"8k": 7600, "64k": 63000}
    QUESTIONS = 4
    QUESTION_TOKENS = 30
    ANSWER_TOKENS = 64

    def conversations(self) -> Iterator[Conversation]:
        opts = self.options
        rng = _rng(opts, 2)
        answer_tokens = min(self.ANSWER_TOKENS, opts.max_output_tokens)
        doc = 0
        while True:
            text = synthetic_text(rng, opts.scaled(self.DOC_TOKENS[opts.context]))
            # One reader asks follow-up questions about the document: the document
            # (in the system slot) plus the history is the shared prefix of each turn.
            turns = tuple(
                Turn(f"Question: {synthetic_text(rng, self.QUESTION_TOKENS)}",
                     synthetic_text(rng, answer_tokens), answer_tokens)
                for _ in range(self.QUESTIONS)
            )
            yield Conversation(f"longdoc-{doc}", turns, f"Document:\n{text}")
            doc += 1


@register_workload
class SharedPromptWorkload(Workload):
    """Many users behind one long system prompt, one to three turns each."""

    name = "shared-prompt"
    SYSTEM_TOKENS = 4000
    QUESTION_TOKENS = 40
    ANSWER_TOKENS = 64

    def conversations(self) -> Iterator[Conversation]:
        opts = self.options
        rng = _rng(opts, 3)
        system = "You are the support assistant. Policy: " + synthetic_text(rng, opts.scaled(self.SYSTEM_TOKENS))
        answer_tokens = min(self.ANSWER_TOKENS, opts.max_output_tokens)
        user = 0
        while True:
            num_turns = int(rng.integers(1, 4))
            turns = tuple(
                Turn(synthetic_text(rng, self.QUESTION_TOKENS), synthetic_text(rng, answer_tokens), answer_tokens)
                for _ in range(num_turns)
            )
            yield Conversation(f"shared-{user}", turns, system)
            user += 1
