# kvmesh: two commands on a fresh machine.
#   make run   set everything up and serve the default local fleet
#   make test  set everything up and run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.kvmesh-installed

.PHONY: run test venv redis vllm bench-cache clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

# redis-server from Debian's packages, only if it is missing.
redis:
	@command -v redis-server >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

test: venv redis
	$(PY) -m pytest -q

run: venv redis
	$(VENV)/bin/kvmesh bench cache

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
