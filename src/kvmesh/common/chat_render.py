"""Chat messages -> the prompt text the engine sees. The router and the simulator share it.

kvaware routing only works if the router's chunk keys equal the engine's, and
those keys hash the *rendered* prompt. So there is exactly one renderer:

- with a model directory, the model's Jinja chat template, rendered the way HF
  transformers (and so vLLM) does: sandboxed, ``trim_blocks``, ``lstrip_blocks``,
  ``raise_exception``, ``add_generation_prompt=True``;
- without one, a fixed plain rendering in which turn N+1's text *extends* turn
  N's (the generation prompt of turn N is a prefix of the assistant message
  that turn N+1 carries), so prefix affinity follows a conversation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

PLAIN_GENERATION_PROMPT = "<|assistant|>\n"
"""What the plain rendering appends for the model's turn."""


class ChatShapeError(ValueError):
    """The messages are not what the OpenAI API allows, or the template rejects them."""


def content_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a part list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise ChatShapeError("message content must be a string or a list of parts")


def checked_messages(messages: Any) -> list[dict[str, Any]]:
    """``messages`` if it is a list of message objects; ``ChatShapeError`` otherwise."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ChatShapeError("'messages' must be a list of message objects")
    return messages


def plain_chat_text(messages: Sequence[dict[str, Any]]) -> str:
    """The model-independent rendering (used when no model directory is given)."""
    parts = [f"<|{m.get('role', 'user')}|>\n{content_text(m.get('content'))}\n" for m in checked_messages(messages)]
    parts.append(PLAIN_GENERATION_PROMPT)
    return "".join(parts)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _token_text(value: Any) -> str:
    if isinstance(value, dict):  # AddedToken serialised form
        return str(value.get("content", ""))
    return value if isinstance(value, str) else ""


class ChatTemplate:
    """A model's chat template, rendered the way HF transformers does."""

    def __init__(self, source: str, special_tokens: dict[str, str]) -> None:
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise_exception
        env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False)
        self._template = env.from_string(source)
        self._special = special_tokens

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> ChatTemplate | None:
        """The template in ``tokenizer_config.json`` (or ``chat_template.jinja``); None if absent."""
        root = Path(model_dir)
        config: dict[str, Any] = {}
        cfg_path = root / "tokenizer_config.json"
        if cfg_path.is_file():
            config = json.loads(cfg_path.read_text())
        source = config.get("chat_template")
        if isinstance(source, list):  # named templates: take "default"
            source = next((t["template"] for t in source if t.get("name") == "default"), None)
        jinja_path = root / "chat_template.jinja"  # newer transformers save it separately
        if not source and jinja_path.is_file():
            source = jinja_path.read_text()
        if not isinstance(source, str) or not source:
            return None
        special = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        return cls(source, special)

    def render(self, messages: Sequence[dict[str, Any]], tools: Any = None) -> str:
        """The prompt text; ``ChatShapeError`` when the template rejects the messages."""
        try:
            return self._template.render(
                messages=checked_messages(messages), add_generation_prompt=True, tools=tools, **self._special)
        except jinja2.TemplateError as exc:
            raise ChatShapeError(f"chat template failed: {exc}") from exc


def render_chat(messages: Sequence[dict[str, Any]], template: ChatTemplate | None = None, tools: Any = None) -> str:
    """The prompt text for ``messages``: the model's template if given, else the plain rendering."""
    if template is None:
        return plain_chat_text(messages)
    return template.render(messages, tools)
