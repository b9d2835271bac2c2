from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmesh.common.chat_render import ChatShapeError, ChatTemplate, plain_chat_text, render_chat


def test_plain_rendering_turn_n_plus_1_extends_turn_n() -> None:
    turn1 = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
    turn2 = [*turn1, {"role": "assistant", "content": "yo"}, {"role": "user", "content": [{"type": "text", "text": "more"}]}]
    t1, t2 = plain_chat_text(turn1), plain_chat_text(turn2)
    assert t1 == "<|system|>\nS\n<|user|>\nhi\n<|assistant|>\n"
    assert t2.startswith(t1) and t2.endswith("<|user|>\nmore\n<|assistant|>\n")


def test_model_template_from_dir_with_special_tokens(tmp_path: Path) -> None:
    source = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}" \
             "{% if add_generation_prompt %}[assistant]{% endif %}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": source, "bos_token": {"content": "<s>"}}))
    template = ChatTemplate.from_model_dir(tmp_path)
    assert template is not None
    assert render_chat([{"role": "user", "content": "q"}], template) == "<s>[user]q\n[assistant]"
    assert ChatTemplate.from_model_dir(tmp_path / "missing") is None


def test_bad_shapes_and_template_errors_raise_chat_shape_error() -> None:
    with pytest.raises(ChatShapeError):
        plain_chat_text("not a list")  # type: ignore[arg-type]
    with pytest.raises(ChatShapeError):
        plain_chat_text([{"role": "user", "content": 5}])
    strict = ChatTemplate("{{ raise_exception('system first') }}", {})
    with pytest.raises(ChatShapeError, match="system first"):
        strict.render([{"role": "user", "content": "x"}])
