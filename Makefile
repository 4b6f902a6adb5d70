# The two commands a newcomer needs (README, first screen):
#   make up    set up .venv, create the example checkpoints, run `lmo up -f examples/minilm.yaml`
#   make test  set up .venv (and Prometheus for the rollout tests, the CRD schemas), run the test suite
# Both work on a fresh machine with Python 3.11 and the package registries.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lmo-installed
EXAMPLE ?= examples/minilm.yaml

export OMP_WAIT_POLICY := PASSIVE
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

CRD_SCHEMAS := tests/fixtures/crd_schemas

# The operator and CLI on Python 3.12 (pyenv's build on these machines): the package without
# the conversion runtime (PyTorch's CPU wheel on this disk is for 3.11 only), and the suites
# that need nothing else: the operator against KMock, the builders, the CLI's parsers.
PY312  ?= $(or $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12)),$(shell command -v python3.12 2>/dev/null))
VENV312 := .venv312
STAMP312 := $(VENV312)/.lmo-installed

.PHONY: setup up test test-py312 prometheus crd-schemas lint clean

# torch first, from the CPU wheel: a resolve that reaches torch through another package
# would otherwise pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(STAMP)

up: setup
	$(BIN)/python examples/make_checkpoints.py
	$(BIN)/lmo up -f $(EXAMPLE)

# Gateway API / KEDA / Prometheus Operator CRD schemas for the custom-resource checks
# (node and npm ship with this machine image; the lock file pins every package).
crd-schemas: $(CRD_SCHEMAS)/node_modules/.package-lock.json
$(CRD_SCHEMAS)/node_modules/.package-lock.json: $(CRD_SCHEMAS)/package-lock.json
	cd $(CRD_SCHEMAS) && npm ci --no-audit --no-fund --loglevel=error

# The rollout tests scrape real Triton servers with a real Prometheus (Debian's package).
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "prometheus is missing: run 'sudo apt-get install -y prometheus'" >&2; exit 1; fi; }

test: setup prometheus crd-schemas
	$(BIN)/pytest

$(STAMP312): pyproject.toml
	@test -n "$(PY312)" || { echo "no python3.12 found: set PY312=/path/to/python3.12" >&2; exit 1; }
	$(PY312) -m venv $(VENV312)
	$(VENV312)/bin/pip install -q -e '.[test-operator]'
	touch $@

test-py312: $(STAMP312) crd-schemas
	$(VENV312)/bin/python --version
	$(VENV312)/bin/pytest -p no:cacheprovider tests/operator tests/builders \
	  --ignore tests/builders/test_triton_real.py

lint: setup
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(VENV312) .lmo .pytest_cache $(CRD_SCHEMAS)/node_modules
