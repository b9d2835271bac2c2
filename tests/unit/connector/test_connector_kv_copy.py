"""Gather/scatter between paged KV tensors and chunk tensors (torch only, no vLLM)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is installed by `make vllm`")

from kvmesh.connector.kv_copy import PagedKV, PagedShape, detect_layout, tensor_from_buffer  # noqa: E402

SHAPE = PagedShape(block_size=4, num_kv_heads=2, head_dim=3)


def _paged(layout: str, num_blocks: int = 6, layers: int = 3) -> dict[str, torch.Tensor]:
    s = SHAPE
    dims = {
        "bhnc": (num_blocks, s.num_kv_heads, s.block_size, 2 * s.head_dim),
        "kv_first": (2, num_blocks, s.block_size, s.num_kv_heads, s.head_dim),
    }[layout]
    gen = torch.Generator().manual_seed(7)
    # Layer names out of order on purpose: 10 must sort after 2.
    names = [f"model.layers.{i}.attn" for i in (10, 2, 0)][:layers]
    return {name: torch.randn(dims, generator=gen).to(torch.bfloat16) for name in names}


def test_layers_sorted_naturally_and_tag() -> None:
    paged = PagedKV(_paged("bhnc"), SHAPE, detail="cpu_attn/vec")
    assert paged.layer_names == [
        "model.layers.0.attn",
        "model.layers.2.attn",
        "model.layers.10.attn",
    ]
    assert paged.tag == "bhnc/cpu_attn/vec/bs4"
    assert paged.chunk_shape(2) == (3, 2, 2, 4, 6)


@pytest.mark.parametrize("layout", ["bhnc", "kv_first"])
def test_gather_scatter_roundtrip_moves_exactly_the_named_blocks(layout: str) -> None:
    src = _paged(layout)
    dst = {name: torch.zeros_like(t) for name, t in src.items()}
    chunk = PagedKV(src, SHAPE).gather([4, 1])
    PagedKV(dst, SHAPE).scatter([0, 5], chunk)
    block_axis = 0 if layout == "bhnc" else 1
    for name in src:
        s, d = src[name], dst[name]
        assert torch.equal(d.select(block_axis, 0), s.select(block_axis, 4))
        assert torch.equal(d.select(block_axis, 5), s.select(block_axis, 1))
        for untouched in (1, 2, 3, 4):
            assert not d.select(block_axis, untouched).any()


def test_kv_first_chunk_is_token_major() -> None:
    src = _paged("kv_first")
    chunk = PagedKV(src, SHAPE).gather([3])
    layer0 = src["model.layers.0.attn"]
    # chunk[layer, kv, token, head, dim] == layer[kv, block, token, head, dim]
    assert torch.equal(chunk[0, 0], layer0[0, 3])
    assert torch.equal(chunk[0, 1], layer0[1, 3])


@pytest.mark.parametrize("layout", ["bhnc", "kv_first"])
def test_skip_blocks_scatters_only_the_tail(layout: str) -> None:
    src = _paged(layout)
    dst = {name: torch.zeros_like(t) for name, t in src.items()}
    paged_src, paged_dst = PagedKV(src, SHAPE), PagedKV(dst, SHAPE)
    chunk = paged_src.gather([2, 3, 4])
    paged_dst.scatter([3, 4], paged_dst.skip_blocks(chunk, 1))
    block_axis = 0 if layout == "bhnc" else 1
    for name in src:
        assert not dst[name].select(block_axis, 2).any()
        assert torch.equal(dst[name].select(block_axis, 3), src[name].select(block_axis, 3))
        assert torch.equal(dst[name].select(block_axis, 4), src[name].select(block_axis, 4))


def test_scatter_rejects_wrong_shape_and_dtype() -> None:
    paged = PagedKV(_paged("bhnc"), SHAPE)
    with pytest.raises(ValueError, match="expected"):
        paged.scatter([0], torch.zeros(paged.chunk_shape(2), dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="float32"):
        paged.scatter([0], torch.zeros(paged.chunk_shape(1), dtype=torch.float32))


def test_unknown_layout_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot tell the paged KV layout"):
        detect_layout((5, 5, 5), SHAPE)


def test_tensor_from_read_only_buffer_is_zero_copy_view() -> None:
    data = torch.arange(12, dtype=torch.bfloat16)
    raw = bytes(data.view(torch.uint8).numpy())
    view = tensor_from_buffer(memoryview(raw), torch.bfloat16, (3, 4))
    assert torch.equal(view, data.view(3, 4))
