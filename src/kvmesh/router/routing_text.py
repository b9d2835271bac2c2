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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmesh.common.chat_render import (
    PLAIN_GENERATION_PROMPT,
    ChatShapeError,
    ChatTemplate,
    checked_messages,
    content_text,
    render_chat,
)
from kvmesh.common.chat_render import plain_chat_text as _plain_messages_text
from kvmesh.router.token_cache import TokenCache

RequestShapeError = ChatShapeError
"""The body's prompt or messages are not what the OpenAI API allows (a ``ValueError``)."""

__all__ = [
    "PLAIN_GENERATION_PROMPT", "ModelRenderer", "RequestShapeError", "completion_prompt",
    "content_text", "plain_chat_text", "routing_text",
]


def plain_chat_text(body: dict[str, Any]) -> str:
    """The model-independent rendering used by prefixaware without ``--model-dir``."""
    return _plain_messages_text(checked_messages(body.get("messages")))


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


@dataclass
class ModelRenderer:
    """A model's tokenizer and chat template, loaded from a local model directory."""

    tokenizer: Any
    template: ChatTemplate | None
    token_cache: TokenCache | None = None
    """Reuses the previous turn's tokens for chat prompts (None: tokenize every prompt whole)."""

    @classmethod
    def load(cls, model_dir: str | Path, token_cache_max_bytes: int = 0) -> ModelRenderer:
        """Load ``tokenizer.json`` and the chat template; ``ValueError`` if unusable."""
        from tokenizers import Tokenizer  # heavy: only kvaware needs it

        tok_path = Path(model_dir) / "tokenizer.json"
        if not tok_path.is_file():
            raise ValueError(f"--model-dir {model_dir}: no tokenizer.json")
        tokenizer = Tokenizer.from_file(str(tok_path))
        cache = TokenCache(tokenizer, token_cache_max_bytes) if token_cache_max_bytes else None
        return cls(tokenizer, ChatTemplate.from_model_dir(model_dir), cache)

    def chat_text(self, body: dict[str, Any]) -> str:
        """The rendered prompt exactly as the engine renders it."""
        return render_chat(checked_messages(body.get("messages")), self.template, body.get("tools"))

    def token_ids(self, path: str, body: dict[str, Any]) -> list[int]:
        """Prompt token ids: chat without added special tokens (the template has them)."""
        if path.endswith("/chat/completions"):
            text = self.chat_text(body)
            if self.token_cache is None:
                return self.tokenizer.encode(text, add_special_tokens=False).ids
            return self.token_cache.encode_chat(text, lambda: self._previous_turn_text(body))
        prompt = completion_prompt(body)
        if isinstance(prompt, list):
            return prompt
        return self.tokenizer.encode(prompt, add_special_tokens=True).ids

    def _previous_turn_text(self, body: dict[str, Any]) -> str | None:
        """The prompt of this conversation's previous request: everything but the last exchange."""
        messages = checked_messages(body.get("messages"))
        if len(messages) < 3:
            return None
        try:
            return render_chat(messages[:-2], self.template, body.get("tools"))
        except ChatShapeError:
            return None
