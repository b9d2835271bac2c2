"""Golden values pin the exact bytes of the chunk-hash chain and storage keys.

If one of these fails, keys changed: every cache in every fleet goes cold.
Bump KEY_VERSION and the goldens together, never one without the other.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmesh.common.hashing import (
    DIGEST_SIZE,
    KEY_VERSION,
    ChainSpec,
    KVLayout,
    RequestExtras,
    key_text,
    num_full_chunks,
    parse_key_text,
    prefix_hashes,
    storage_key,
)

TINY = ChainSpec("tiny")


def _ref_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def _ref_h(seed: int, data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16, key=seed.to_bytes(8, "little"), person=b"kvmesh").digest()


def _ref_chain(tokens: list[int], model: str, chunk: int, seed: int, salt: str = "", lora: str = "") -> list[bytes]:
    """An independent implementation of the encoding documented in hashing.py."""
    parent = _ref_h(seed, b"kvmesh/root" + struct.pack("<HI", 1, chunk) + _ref_str(model))
    out = []
    for i in range(len(tokens) // chunk):
        body = struct.pack(f"<{chunk}I", *tokens[i * chunk : (i + 1) * chunk])
        parent = _ref_h(seed, b"kvmesh/chunk" + struct.pack("<H", 1) + parent + _ref_str(salt) + _ref_str(lora) + body)
        out.append(parent)
    return out


def test_key_version_is_pinned() -> None:
    assert KEY_VERSION == 1


def test_golden_root_and_chain() -> None:
    assert TINY.root().hex() == "ed8c13bc5f9d573cd09a9f575a1d11dd"
    assert [h.hex() for h in prefix_hashes(list(range(600)), TINY)] == [
        "ea7ecc1ec3c3650e4cd3d543d0d619b8",
        "dd040a0f34fa427674a6d738a105c3a1",
    ]


def test_golden_salt_seed_and_chunk_size() -> None:
    salted = prefix_hashes(list(range(512)), TINY, RequestExtras(cache_salt="tenant-a"))
    assert salted[1].hex() == "119ac8230b8c20f5c700829452a74153"
    seeded = prefix_hashes(list(range(512)), ChainSpec("tiny", chunk_size=16, seed=42))
    assert seeded[0].hex() == "a35835743e98806728c77bc6f54d0b1a"


def test_golden_storage_key_llama8b_layout() -> None:
    h0 = prefix_hashes(list(range(600)), TINY)[0]
    layout = KVLayout("bfloat16", num_layers=32, num_kv_heads=8, head_dim=128)
    assert storage_key(h0, layout).hex() == "144af053a46819d0ead31a541cc603ca"


@given(
    tokens=st.lists(st.integers(0, 2**32 - 1), max_size=80),
    chunk=st.integers(1, 17),
    seed=st.integers(0, 2**64 - 1),
    salt=st.text(max_size=5),
    lora=st.text(max_size=5),
)
def test_matches_reference_encoding(tokens: list[int], chunk: int, seed: int, salt: str, lora: str) -> None:
    spec = ChainSpec("m", chunk_size=chunk, seed=seed)
    got = prefix_hashes(tokens, spec, RequestExtras(cache_salt=salt, lora_name=lora))
    assert got == _ref_chain(tokens, "m", chunk, seed, salt, lora)


def test_identical_in_a_fresh_process_with_another_hash_seed() -> None:
    code = (
        "from kvmesh.common.hashing import ChainSpec, prefix_hashes;"
        "print(prefix_hashes(list(range(600)), ChainSpec('tiny'))[1].hex())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == prefix_hashes(list(range(600)), TINY)[1].hex()


def test_chain_prefix_property_and_partial_tail_ignored() -> None:
    tokens = list(range(1000))
    full = prefix_hashes(tokens, TINY)
    assert len(full) == 3  # 1000 // 256, the 232-token tail is not a chunk
    assert prefix_hashes(tokens[:768], TINY) == full
    assert prefix_hashes(tokens[:767], TINY) == full[:2]
    assert prefix_hashes(tokens, TINY, max_chunks=1) == full[:1]
    changed = tokens.copy()
    changed[300] += 1  # inside chunk 1: chunk 0 keeps its hash, the rest change
    other = prefix_hashes(changed, TINY)
    assert other[0] == full[0] and other[1] != full[1] and other[2] != full[2]


def test_every_namespace_field_changes_the_keys() -> None:
    tokens = list(range(256))
    base = prefix_hashes(tokens, TINY)[0]
    variants = [
        prefix_hashes(tokens, ChainSpec("other-model"))[0],
        prefix_hashes(tokens, ChainSpec("tiny", seed=1))[0],
        prefix_hashes(tokens, TINY, RequestExtras(cache_salt="a"))[0],
        prefix_hashes(tokens, TINY, RequestExtras(lora_name="a"))[0],
    ]
    assert len({base, *variants}) == 5
    # salt "a"+lora "" must differ from salt ""+lora "a" (length-prefixed fields)
    assert variants[2] != variants[3]
    layout = KVLayout("bfloat16", 32, 8, 128)
    keys = {
        storage_key(base, layout),
        storage_key(base, KVLayout("float16", 32, 8, 128)),
        storage_key(base, KVLayout("bfloat16", 31, 8, 128)),
        storage_key(base, KVLayout("bfloat16", 32, 4, 128)),
        storage_key(base, KVLayout("bfloat16", 32, 8, 64)),
        storage_key(base, KVLayout("bfloat16", 32, 8, 128, tp_rank=1, tp_world_size=2)),
        storage_key(base, KVLayout("bfloat16", 32, 8, 128, tp_rank=0, tp_world_size=2)),
        storage_key(base, KVLayout("bfloat16", 32, 8, 128, layout_tag="cpu")),
        storage_key(base, layout, seed=7),
    }
    assert len(keys) == 9


def test_numpy_and_list_inputs_agree() -> None:
    tokens = list(range(513))
    assert prefix_hashes(np.array(tokens, dtype=np.int64), TINY) == prefix_hashes(tokens, TINY)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ChainSpec(""), "model_id"),
        (lambda: ChainSpec("m", chunk_size=0), "chunk_size"),
        (lambda: ChainSpec("m", seed=-1), "seed"),
        (lambda: KVLayout("bf16", 0, 1, 1), "num_layers"),
        (lambda: KVLayout("bf16", 1, 1, 1, tp_rank=2, tp_world_size=2), "tp_rank"),
        (lambda: prefix_hashes([-1] * 256, TINY), "token ids"),
        (lambda: prefix_hashes([[1, 2]], TINY), "one-dimensional"),
        (lambda: storage_key(b"short", KVLayout("bf16", 1, 1, 1)), "16 bytes"),
    ],
)
def test_misuse_raises_value_error(call, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        call()


def test_key_text_round_trip_and_version_check() -> None:
    key = prefix_hashes(list(range(256)), TINY)[0]
    assert len(key) == DIGEST_SIZE
    assert key_text(key) == "v1:" + key.hex()
    assert parse_key_text(key_text(key)) == key
    with pytest.raises(ValueError, match="not a v1"):
        parse_key_text("v2:" + key.hex())
    with pytest.raises(ValueError):
        parse_key_text("v1:abc")
    assert num_full_chunks(511, 256) == 1
