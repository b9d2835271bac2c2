from __future__ import annotations

import pytest

from kvmesh.router.routing_text import RequestShapeError, completion_prompt, plain_chat_text, routing_text


def test_turn_n_plus_1_extends_turn_n() -> None:
    turn1 = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"}]}
    turn2 = {"messages": turn1["messages"] + [{"role": "assistant", "content": "a1"},
                                              {"role": "user", "content": "q2"}]}
    t1, t2 = plain_chat_text(turn1), plain_chat_text(turn2)
    assert t1 == "<|system|>\nS\n<|user|>\nq1\n<|assistant|>\n"
    assert t2.startswith(t1)


def test_content_parts_and_completions() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    assert plain_chat_text(body) == "<|user|>\nab\n<|assistant|>\n"
    assert routing_text("/v1/completions", {"prompt": "hello"}) == "hello"
    assert routing_text("/v1/completions", {"prompt": [1, 2, 3]}) == "1 2 3"
    assert completion_prompt({"prompt": ["only"]}) == "only"


@pytest.mark.parametrize("body", [{"messages": "x"}, {"messages": [1]}, {"messages": [{"content": 5}]}])
def test_bad_messages(body: dict) -> None:
    with pytest.raises(RequestShapeError):
        plain_chat_text(body)


def test_bad_prompt() -> None:
    with pytest.raises(RequestShapeError):
        routing_text("/v1/completions", {"prompt": {"x": 1}})


def test_model_renderer_reads_chat_template_jinja_file(tmp_path) -> None:  # noqa: ANN001
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from router_backends import make_tiny_model_dir

    from kvmesh.router.routing_text import ModelRenderer

    model = make_tiny_model_dir(tmp_path / "m")
    (model / "tokenizer_config.json").write_text(json.dumps({"eos_token": "[UNK]"}))
    (model / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}{{ eos_token }}")
    renderer = ModelRenderer.load(model)
    body = {"messages": [{"role": "user", "content": "hello"}]}
    assert renderer.chat_text(body) == "user: hello\nassistant:[UNK]"
    assert renderer.token_ids("/v1/completions", {"prompt": "hello there"}) == \
        renderer.tokenizer.encode("hello there", add_special_tokens=True).ids


def test_template_raise_exception_is_a_shape_error(tmp_path) -> None:  # noqa: ANN001
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from router_backends import make_tiny_model_dir

    from kvmesh.router.routing_text import ModelRenderer

    model = make_tiny_model_dir(tmp_path / "m")
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template":
        "{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}ok"}))
    renderer = ModelRenderer.load(model)
    with pytest.raises(RequestShapeError, match="system first"):
        renderer.chat_text({"messages": [{"role": "user", "content": "x"}]})
    assert renderer.chat_text({"messages": [{"role": "system", "content": "x"}]}) == "ok"
