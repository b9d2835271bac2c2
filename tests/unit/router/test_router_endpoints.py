from __future__ import annotations

import pytest

from kvmesh.router.config import BackendSpec, CostModel, RouterConfig
from kvmesh.router.endpoints import EndpointRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_and_readmits_after_cooldown() -> None:
    clock = Clock()
    reg = EndpointRegistry(breaker_failures=2, breaker_cooldown_s=5.0, clock=clock)
    reg.set_backends([BackendSpec("http://127.0.0.1:1"), BackendSpec("http://127.0.0.1:2")])
    a, b = reg.all()
    reg.record_failure(a)
    assert reg.available() == [a, b]
    reg.record_failure(a)
    assert (reg.available(), a.healthy, a.open_until) == ([b], False, 105.0)
    reg.record_success(a)  # a health check inside the cooldown does not re-admit
    assert reg.available() == [b]
    clock.now = 105.0
    reg.record_success(a)
    assert (reg.available(), a.failures) == ([a, b], 0)


def test_membership_changes_notify_listeners() -> None:
    reg = EndpointRegistry()
    seen: list[tuple[list[str], list[str]]] = []
    reg.subscribe(lambda added, removed: seen.append(([e.url for e in added], [e.url for e in removed])))
    reg.set_backends([BackendSpec("http://127.0.0.1:1")])
    reg.set_backends([BackendSpec("http://127.0.0.1:1")])  # no change, no call
    reg.set_backends([BackendSpec("http://127.0.0.1:2", "tcp://127.0.0.1:3")])
    assert seen == [(["http://127.0.0.1:1"], []), (["http://127.0.0.1:2"], ["http://127.0.0.1:1"])]
    assert reg.get("http://127.0.0.1:2").events_endpoint == "tcp://127.0.0.1:3"  # type: ignore[union-attr]


def test_backend_spec_parsing() -> None:
    assert BackendSpec.parse("http://localhost:8001/") == BackendSpec("http://localhost:8001")
    assert BackendSpec.parse("http://h:1#events=tcp://h:2") == BackendSpec("http://h:1", "tcp://h:2")
    for bad in ("ftp://h:1", "http://h:1/v1", "http://h:1#evts=tcp://x:1", "http://h:1#events=udp://x"):
        with pytest.raises(ValueError):
            BackendSpec.parse(bad)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "--backend"),
    ({"backends": (BackendSpec("http://h:1"),), "strategy": "random"}, "strategy"),
    ({"backends": (BackendSpec("http://h:1"),), "strategy": "kvaware"}, "--model-dir"),
    ({"backends": (BackendSpec("http://h:1"),), "read_timeout_s": 0}, "read_timeout_s"),
    ({"backends": (BackendSpec("http://h:1"),), "load_factor": 0.5}, "load_factor"),
    ({"backends": (BackendSpec("http://h:1"),), "chunk_size": 0}, "chunk_size"),
    ({"backends": (BackendSpec("http://h:1"),), "hash_seed": -1}, "hash_seed"),
    ({"backends": (BackendSpec("http://h:1"),), "load_smoothing_s": -1}, "load_smoothing_s"),
    ({"k8s_namespace": "ns", "k8s_selector": "a=b", "k8s_resource": "services"}, "k8s_resource"),
])
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RouterConfig(**kwargs)


def test_cost_model_validation() -> None:
    with pytest.raises(ValueError, match="prefill_ms_per_token"):
        CostModel(prefill_ms_per_token=-1)
