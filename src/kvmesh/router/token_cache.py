"""Incremental tokenization of chat prompts for ``kvaware``.

Tokenizing is almost all of a kvaware decision's cost (about 5 ms for a
3,400-token prompt on the dev machine, against 0.1 ms for the chain hashes).
In a conversation, turn N+1's rendered prompt *extends* turn N's, so only its
tail is new. The cache remembers each prompt's token ids, keyed by a digest of
its text; the next turn finds them by rendering its own ``messages[:-2]``,
which is exactly the previous request's prompt.

Restarting a tokenizer mid-text is only safe at a token boundary that the new
text does not move. So the tail is re-tokenized from ``SYNC_TOKENS`` tokens
before the end of the previous prompt, and the result is accepted only if its
first ``SYNC_TOKENS - SLACK_TOKENS`` tokens equal the previous tokenization
there. Anything else (a tokenizer that prepends a space, a merge reaching far
back) fails that check and falls back to tokenizing the whole prompt. The ids
only ever pick a route; the engine tokenizes for itself, so a miss here can
cost cache affinity, never a wrong answer.

Memory is bounded: entries are evicted least recently used first when their
ids exceed ``max_bytes``; the size is exported with the other routing indexes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SYNC_TOKENS = 16
"""Tokens before the end of the previous prompt where re-tokenization restarts."""

SLACK_TOKENS = 4
"""Of those, how many at the very end may legitimately change (merges with the new text)."""

_ENTRY_OVERHEAD_BYTES = 256


@dataclass
class _Entry:
    ids: np.ndarray
    """Every token id of the prompt (uint32)."""
    tail_starts: np.ndarray
    """Character offset where each of the last ``SYNC_TOKENS`` tokens starts (int64)."""

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.tail_starts.nbytes + _ENTRY_OVERHEAD_BYTES


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class TokenCache:
    """Token ids of recent prompts, LRU-bounded by bytes. Not thread-safe (one event loop)."""

    def __init__(self, tokenizer: Any, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.tokenizer = tokenizer
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self.num_bytes = 0
        self.stats = {"exact": 0, "incremental": 0, "full": 0, "resync_failed": 0}
        """How each encode was served (for tests and debugging)."""

    def __len__(self) -> int:
        return len(self._entries)

    def encode_chat(self, text: str, previous: Callable[[], str | None]) -> list[int]:
        """Token ids of ``text`` (no added special tokens), reusing a previous turn's.

        ``previous`` renders the prompt that the conversation's previous request
        had; it is called only when ``text`` itself is not cached.
        """
        key = _digest(text)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.stats["exact"] += 1
            return entry.ids.tolist()
        prev_text = previous()
        prev = self._entries.get(_digest(prev_text)) if prev_text and text.startswith(prev_text) else None
        ids, starts = (None, None) if prev is None else self._extend(text, prev)
        if ids is None:
            encoding = self.tokenizer.encode(text, add_special_tokens=False)
            ids = np.asarray(encoding.ids, dtype=np.uint32)
            starts = np.asarray([o[0] for o in encoding.offsets[-SYNC_TOKENS:]], dtype=np.int64)
            self.stats["full"] += 1
        else:
            self.stats["incremental"] += 1
        self._put(key, _Entry(ids, starts))
        return ids.tolist()

    def _extend(self, text: str, prev: _Entry) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Re-tokenize from a sync point near the end of ``prev``; (None, None) if unsafe."""
        keep = len(prev.ids) - len(prev.tail_starts)
        start = int(prev.tail_starts[0]) if len(prev.tail_starts) else 0
        encoding = self.tokenizer.encode(text[start:], add_special_tokens=False)
        tail = np.asarray(encoding.ids, dtype=np.uint32)
        must_match = max(len(prev.tail_starts) - SLACK_TOKENS, 0)
        if len(tail) < must_match or not np.array_equal(tail[:must_match], prev.ids[keep:keep + must_match]):
            self.stats["resync_failed"] += 1
            return None, None
        ids = np.concatenate([prev.ids[:keep], tail])
        # The window is the tail's last tokens; a tail shorter than SYNC_TOKENS (merges) just
        # makes a shorter window, which the next _extend handles by its length.
        starts = np.asarray([start + o[0] for o in encoding.offsets[-SYNC_TOKENS:]], dtype=np.int64)
        return ids, starts

    def _put(self, key: bytes, entry: _Entry) -> None:
        if entry.nbytes > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.num_bytes -= old.nbytes
        self._entries[key] = entry
        self.num_bytes += entry.nbytes
        while self.num_bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.num_bytes -= evicted.nbytes
