"""Benchmark workloads: ``sharegpt``, ``multiround``, ``longdoc``, ``shared-prompt``.

Importing this package registers the built-ins in
:data:`kvmesh.bench.workloads.base.WORKLOADS`.
"""

from kvmesh.bench.workloads import sharegpt, synthetic  # noqa: F401  (registration)
from kvmesh.bench.workloads.base import (
    WORKLOADS,
    Conversation,
    Turn,
    Workload,
    WorkloadOptions,
    create_workload,
)

__all__ = ["WORKLOADS", "Conversation", "Turn", "Workload", "WorkloadOptions", "create_workload"]
