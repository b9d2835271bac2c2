"""kvaware's incremental chat tokenization equals tokenizing every prompt whole."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from kvmesh.connector.local_model import corpus_text, write_tokenizer
from kvmesh.router.routing_text import ModelRenderer
from kvmesh.router.token_cache import TokenCache

PATH = "/v1/chat/completions"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The byte-level BPE tokenizer and chat template `kvmesh model create` writes (no weights)."""
    out = tmp_path_factory.mktemp("demo-tokenizer")
    write_tokenizer(out, vocab_size=2048, max_length=4096)
    return out


def _conversation(seed: int, turns: int) -> list[list[dict[str, str]]]:
    """Each request's messages: turn N+1 carries turn N plus the answer and a new question."""
    rng = random.Random(seed)
    words = corpus_text().split()
    say = lambda n: " ".join(rng.choice(words) for _ in range(n))  # noqa: E731
    messages = [{"role": "system", "content": say(40)}, {"role": "user", "content": say(rng.randint(5, 60))}]
    requests = [list(messages)]
    for _ in range(turns - 1):
        messages += [{"role": "assistant", "content": say(rng.randint(1, 80))},
                     {"role": "user", "content": say(rng.randint(1, 60)) + rng.choice(["", "\n", "  ", "?"])}]
        requests.append(list(messages))
    return requests


def test_every_turn_matches_whole_tokenization(demo_dir: Path) -> None:
    cached = ModelRenderer.load(demo_dir, token_cache_max_bytes=1 << 20)
    plain = ModelRenderer.load(demo_dir)
    assert plain.token_cache is None
    for seed in range(5):
        for messages in _conversation(seed, turns=12):
            body = {"model": "demo", "messages": messages}
            assert cached.token_ids(PATH, body) == plain.token_ids(PATH, body)
    cache = cached.token_cache
    assert cache is not None
    # Turn 1 of each conversation is tokenized whole; every later turn reuses the previous one.
    assert cache.stats == {"exact": 0, "incremental": 5 * 11, "full": 5, "resync_failed": 0}
    body = {"model": "demo", "messages": _conversation(0, turns=3)[-1]}
    assert cached.token_ids(PATH, body) == plain.token_ids(PATH, body)
    assert cache.stats["exact"] == 1


def test_a_tokenizer_that_is_not_restartable_falls_back_to_whole(tmp_path: Path) -> None:
    # Metaspace with prepend_scheme="always" adds "▁" to whatever it is given, so a tail
    # tokenized on its own starts differently; the sync check must catch it.
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator([corpus_text()], trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>"]))
    cache = TokenCache(tok, max_bytes=1 << 20)
    # One long word: the restart point falls mid-word, where the tail gains a "▁" it never had.
    turn1 = "alphabetsoup" * 30
    turn2 = turn1 + " answer and question two"
    whole = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
    assert cache.encode_chat(turn1, lambda: None) == whole(turn1)
    assert cache.encode_chat(turn2, lambda: turn1) == whole(turn2)
    assert cache.stats == {"exact": 0, "incremental": 0, "full": 2, "resync_failed": 1}


def test_memory_is_bounded_least_recently_used_first(demo_dir: Path) -> None:
    renderer = ModelRenderer.load(demo_dir)
    prompts = [f"prompt {i} " + corpus_text()[:400] for i in range(6)]
    sizes = []
    probe = TokenCache(renderer.tokenizer, max_bytes=1 << 20)
    for p in prompts:
        probe.encode_chat(p, lambda: None)
        sizes.append(probe.num_bytes - sum(sizes))
    budget = sum(sizes[:3]) + sizes[3] // 2  # room for three entries, not four
    cache = TokenCache(renderer.tokenizer, max_bytes=budget)
    for p in prompts[:3]:
        cache.encode_chat(p, lambda: None)
    cache.encode_chat(prompts[0], lambda: None)  # touch 0: now 1 is the least recently used
    cache.encode_chat(prompts[3], lambda: None)
    assert len(cache) == 3 and cache.num_bytes <= budget
    before = dict(cache.stats)
    for i in (0, 2, 3, 1):
        cache.encode_chat(prompts[i], lambda: None)
    # 0, 2 and 3 were still cached; 1 had been evicted and was tokenized again.
    assert cache.stats["exact"] - before["exact"] == 3
    assert cache.stats["full"] - before["full"] == 1


def test_negative_budget_is_rejected(demo_dir: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        TokenCache(ModelRenderer.load(demo_dir).tokenizer, max_bytes=-1)
