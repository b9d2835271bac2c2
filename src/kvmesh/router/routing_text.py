"""What a request is routed on: its text (prefixaware) or its token ids (kvaware).

Chat requests are rendered so that turn N+1's text *extends* turn N's: the
generation prompt of turn N is a prefix of the assistant message that turn
N+1 carries. Without a model directory the router uses a fixed plain
rendering; with ``--model-dir`` it renders the model's own chat template the
way HF transformers does (jinja2 with trim_blocks, lstrip_blocks,
``raise_exception``, ``add_generation_prompt=True``) and tokenizes with the
model's ``tokenizer.json``, so kvaware's chunk keys equal the engine's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

PLAIN_GENERATION_PROMPT = "<|assistant|>\n"


class RequestShapeError(ValueError):
    """The body's prompt or messages are not what the OpenAI API allows."""


def content_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a part list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise RequestShapeError("message content must be a string or a list of parts")


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise RequestShapeError("'messages' must be a list of message objects")
    return messages


def plain_chat_text(body: dict[str, Any]) -> str:
    """The model-independent rendering used by prefixaware without ``--model-dir``."""
    parts = [f"<|{m.get('role', 'user')}|>\n{content_text(m.get('content'))}\n" for m in _messages(body)]
    parts.append(PLAIN_GENERATION_PROMPT)
    return "".join(parts)


def completion_prompt(body: dict[str, Any]) -> str | list[int]:
    """The prompt of a completions request: text, or token ids."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return prompt
    raise RequestShapeError("'prompt' must be a string or a list of token ids")


def routing_text(path: str, body: dict[str, Any]) -> str:
    """prefixaware's text for a request (token-id prompts become their decimal text)."""
    if path.endswith("/chat/completions"):
        return plain_chat_text(body)
    prompt = completion_prompt(body)
    return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


@dataclass
class ModelRenderer:
    """A model's tokenizer and chat template, loaded from a local model directory."""

    tokenizer: Any
    template: jinja2.Template | None
    special: dict[str, str]

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelRenderer:
        """Load ``tokenizer.json`` and ``tokenizer_config.json``; ``ValueError`` if unusable."""
        from tokenizers import Tokenizer  # heavy: only kvaware needs it

        root = Path(model_dir)
        tok_path = root / "tokenizer.json"
        if not tok_path.is_file():
            raise ValueError(f"--model-dir {model_dir}: no tokenizer.json")
        tokenizer = Tokenizer.from_file(str(tok_path))
        config: dict[str, Any] = {}
        cfg_path = root / "tokenizer_config.json"
        if cfg_path.is_file():
            config = json.loads(cfg_path.read_text())
        template_src = config.get("chat_template")
        if isinstance(template_src, list):  # named templates: take "default"
            template_src = next((t["template"] for t in template_src if t.get("name") == "default"), None)
        jinja_path = root / "chat_template.jinja"  # newer transformers save it separately
        if not template_src and jinja_path.is_file():
            template_src = jinja_path.read_text()
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise_exception
        env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False)
        template = env.from_string(template_src) if template_src else None
        special = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        return cls(tokenizer, template, special)

    def chat_text(self, body: dict[str, Any]) -> str:
        """The rendered prompt exactly as the engine renders it."""
        if self.template is None:
            return plain_chat_text(body)
        try:
            return self.template.render(
                messages=_messages(body), add_generation_prompt=True, tools=body.get("tools"),
                **self.special)
        except jinja2.TemplateError as exc:
            raise RequestShapeError(f"chat template failed: {exc}") from exc

    def token_ids(self, path: str, body: dict[str, Any]) -> list[int]:
        """Prompt token ids: chat without added special tokens (the template has them)."""
        if path.endswith("/chat/completions"):
            return self.tokenizer.encode(self.chat_text(body), add_special_tokens=False).ids
        prompt = completion_prompt(body)
        if isinstance(prompt, list):
            return prompt
        return self.tokenizer.encode(prompt, add_special_tokens=True).ids


def _token_text(value: Any) -> str:
    if isinstance(value, dict):  # AddedToken serialised form
        return str(value.get("content", ""))
    return value if isinstance(value, str) else ""
