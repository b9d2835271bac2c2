"""Gather and scatter between vLLM's paged KV blocks and chunk tensors (torch).

A chunk is the KV of ``chunk_size`` consecutive prompt tokens, i.e.
``chunk_size / block_size`` whole vLLM blocks of every attention layer. It
is moved block by block, one ``index_select``/``index_copy_`` per layer, so a
load or save is a plain memcpy of whole blocks and never reinterprets them.

Chunk layouts, by paged layout (the per-layer tensors vLLM passes to
``register_kv_caches``), selected from a registry by tensor shape::

    bhnc      layer tensor [num_blocks, heads, block_size, content]    vLLM >= 0.2x: the
              logical per-layer view of every backend (physical strides may differ;
              CPU attention: content = K|V, 2*head_dim)
              chunk        [layers, blocks, heads, block_size, content]  blocks verbatim
    kv_first  layer tensor [2, num_blocks, block_size, heads, dim]     (older vLLM GPU, NHD)
              chunk        [layers, 2, tokens, heads, dim]              token-major

Block interiors are backend specific: vLLM's CPU attention packs K in an
ISA-specific tiling (measured: the ``vec`` ISA stores K transposed, ``amx``
tiles it). Blocks are therefore stored verbatim and the layout tag
(``bhnc/cpu_attn/<isa>/bs<block_size>``) goes into every storage key:
only workers with the same backend, ISA, block size, model, dtype and TP
shape share chunks, and a wrong reinterpretation is impossible by key.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PagedShape:
    """The geometry every layer tensor shares."""

    block_size: int
    """Tokens per vLLM KV block."""
    num_kv_heads: int
    """KV heads per layer on this rank."""
    head_dim: int
    """Elements per head."""


@dataclass(frozen=True)
class BlockLayout:
    """One paged layout: how to recognise a layer tensor and move its blocks."""

    name: str
    """Registry key; the first part of the layout tag."""
    matches: Callable[[tuple[int, ...], PagedShape], bool]
    """True if a layer tensor of this shape is in this layout."""
    chunk_dims: Callable[[int, int, PagedShape], tuple[int, ...]]
    """``(num_layers, num_blocks, shape)`` -> the chunk tensor's shape."""
    gather: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]
    """``(layer_tensor, block_index, out)``: copy the blocks into one layer's slice of a chunk."""
    scatter: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]
    """``(layer_tensor, block_index, src)``: copy one layer's slice of a chunk into the blocks."""
    skip_blocks: Callable[[torch.Tensor, int, PagedShape], torch.Tensor]
    """``(chunk, k, shape)``: a view of the chunk without its first ``k`` blocks."""


def _bhnc_gather(kv: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> None:
    # Works on any physical stride order: index_select reads the logical view.
    torch.index_select(kv, 0, index, out=out)


def _bhnc_scatter(kv: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> None:
    kv.index_copy_(0, index, src)


def _kv_first_gather(kv: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> None:
    # out: [2, tokens, heads, dim] == [2, n * block_size, ...]; kv[:, index] is [2, n, bs, H, D].
    out.view(kv.shape[0], index.numel(), *kv.shape[2:]).copy_(kv.index_select(1, index))


def _kv_first_scatter(kv: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> None:
    kv.index_copy_(1, index, src.reshape(kv.shape[0], index.numel(), *kv.shape[2:]))


BLOCK_LAYOUTS: dict[str, BlockLayout] = {
    "bhnc": BlockLayout(
        "bhnc",
        lambda s, p: len(s) == 4 and s[1:] == (p.num_kv_heads, p.block_size, 2 * p.head_dim),
        lambda layers, n, p: (layers, n, p.num_kv_heads, p.block_size, 2 * p.head_dim),
        _bhnc_gather,
        _bhnc_scatter,
        lambda chunk, k, p: chunk[:, k:],
    ),
    "kv_first": BlockLayout(
        "kv_first",
        lambda s, p: (
            len(s) == 5 and s[0] == 2 and s[2:] == (p.block_size, p.num_kv_heads, p.head_dim)
        ),
        lambda layers, n, p: (layers, 2, n * p.block_size, p.num_kv_heads, p.head_dim),
        _kv_first_gather,
        _kv_first_scatter,
        lambda chunk, k, p: chunk[:, :, k * p.block_size :],
    ),
}
"""Known paged layouts by name. Add an entry to support another attention backend."""


def detect_layout(tensor_shape: Sequence[int], shape: PagedShape) -> BlockLayout:
    """The one registered layout matching ``tensor_shape``; ``ValueError`` if none or several."""
    found = [lay for lay in BLOCK_LAYOUTS.values() if lay.matches(tuple(tensor_shape), shape)]
    if len(found) != 1:
        raise ValueError(
            f"cannot tell the paged KV layout of a {tuple(tensor_shape)} tensor with {shape} "
            f"(candidates: {[lay.name for lay in found]}); kvmesh knows {sorted(BLOCK_LAYOUTS)}"
        )
    return found[0]


def _natural_key(name: str) -> list[object]:
    # "model.layers.10.attn" sorts after "model.layers.9.attn".
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class PagedKV:
    """vLLM's per-layer paged KV tensors, with whole-block gather/scatter to chunk tensors."""

    def __init__(
        self, kv_caches: Mapping[str, torch.Tensor], shape: PagedShape, detail: str = ""
    ) -> None:
        """``detail`` is appended to the layout tag (for example the CPU attention ISA)."""
        if not kv_caches:
            raise ValueError("no KV cache tensors to register")
        self.shape = shape
        self.layer_names = sorted(kv_caches, key=_natural_key)
        first = kv_caches[self.layer_names[0]]
        self.layout = detect_layout(first.shape, shape)
        self.tag = "/".join(p for p in (self.layout.name, detail, f"bs{shape.block_size}") if p)
        self.dtype = first.dtype
        self.device = first.device
        self._layers = [kv_caches[name] for name in self.layer_names]

    @property
    def num_layers(self) -> int:
        """Attention layers."""
        return len(self._layers)

    def chunk_shape(self, num_blocks: int) -> tuple[int, ...]:
        """Shape of the chunk tensor holding ``num_blocks`` blocks of every layer."""
        return self.layout.chunk_dims(self.num_layers, num_blocks, self.shape)

    def _index(self, block_ids: Sequence[int]) -> torch.Tensor:
        return torch.tensor(list(block_ids), dtype=torch.long, device=self.device)

    def gather(self, block_ids: Sequence[int]) -> torch.Tensor:
        """Copy the KV of ``block_ids`` (in order) into a new contiguous CPU chunk tensor."""
        out = torch.empty(self.chunk_shape(len(block_ids)), dtype=self.dtype, device=self.device)
        index = self._index(block_ids)
        for layer, kv in enumerate(self._layers):
            self.layout.gather(kv, index, out[layer])
        return out if out.device.type == "cpu" else out.to("cpu")

    def skip_blocks(self, chunk: torch.Tensor, num_blocks: int) -> torch.Tensor:
        """A view of ``chunk`` without its first ``num_blocks`` blocks (already in vLLM's cache)."""
        return self.layout.skip_blocks(chunk, num_blocks, self.shape)

    def scatter(self, block_ids: Sequence[int], src: torch.Tensor) -> None:
        """Write chunk tensor ``src`` (``len(block_ids)`` blocks) into ``block_ids``."""
        expected = self.chunk_shape(len(block_ids))
        if tuple(src.shape) != expected:
            raise ValueError(f"scatter source has shape {tuple(src.shape)}, expected {expected}")
        if src.dtype != self.dtype:
            raise ValueError(f"scatter source is {src.dtype}, the KV cache is {self.dtype}")
        src = src.to(self.device, non_blocking=True)
        index = self._index(block_ids)
        for layer, kv in enumerate(self._layers):
            self.layout.scatter(kv, index, src[layer])


def tensor_from_buffer(
    buffer: memoryview, dtype: torch.dtype, shape: Sequence[int]
) -> torch.Tensor:
    """A zero-copy tensor over a (possibly read-only) chunk buffer.

    The tensor is only ever read (scattered into vLLM's blocks), so torch's
    warning about non-writable buffers is silenced rather than paid for with a copy.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.frombuffer(buffer, dtype=torch.uint8)
    return flat.view(dtype).view(*shape)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the cache library's dtype names)."""
    return str(dtype).removeprefix("torch.")
