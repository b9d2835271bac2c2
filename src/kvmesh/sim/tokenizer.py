"""Tokenizers and chat rendering for the simulator.

Without a model directory the simulator uses :class:`WordTokenizer`: every word
and every punctuation mark is one token, and its id is a seeded xxhash of the
text, so the same text gives the same ids in every process (never Python's
``hash()``). That is close enough to BPE counts for latency modelling, and
cheap enough for 64 workers on 2 cores. With ``--model-dir`` the model's own
``tokenizer.json`` is used, so router and simulator agree with a real worker.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import xxhash

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
    """The model's Jinja chat template from ``tokenizer_config.json``, if it has one."""
    if not model_dir:
        return None
    path = Path(model_dir) / "tokenizer_config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    source = config.get("chat_template")
    if isinstance(source, list):  # named templates: take "default"
        source = next((t["template"] for t in source if t.get("name") == "default"), None)
    if not isinstance(source, str):
        return None
    special = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return ChatTemplate(source, special)


class ChatTemplate:
    """A model's chat template, rendered the way HF transformers (and so vLLM) does."""

    def __init__(self, source: str, special: dict[str, str]) -> None:
        import jinja2.sandbox

        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise_exception
        env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False)
        self._template = env.from_string(source)
        self._special = special

    def render(self, messages: Sequence[dict[str, object]]) -> str:
        """The prompt text; ``ValueError`` when the template rejects the messages."""
        import jinja2

        try:
            return self._template.render(messages=list(messages), add_generation_prompt=True, **self._special)
        except jinja2.TemplateError as exc:
            raise ValueError(f"chat template failed: {exc}") from exc


def render_chat(messages: Sequence[dict[str, object]], template: ChatTemplate | None = None) -> str:
    """Render chat messages to the prompt text the engine sees.

    Without a model template this is the fleet's plain rendering, byte for byte
    the one the router uses (``kvmesh.router.routing_text.plain_chat_text``), so
    a router hashing the text and a sim worker agree on chunk keys.
    """
    if template is not None:
        return template.render(messages)
    parts = [f"<|{m.get('role', 'user')}|>\n{_content_text(m.get('content'))}\n" for m in messages]
    parts.append("<|assistant|>\n")
    return "".join(parts)


def _content_text(content: object) -> str:
    """OpenAI content is a string or a list of parts; only text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _token_text(value: object) -> str:
    if isinstance(value, dict):  # AddedToken serialised form
        return str(value.get("content", ""))
    return value if isinstance(value, str) else ""


def _raise_exception(message: str) -> None:
    import jinja2

    raise jinja2.TemplateError(message)
