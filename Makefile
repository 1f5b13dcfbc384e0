# The two commands of the README: `make demo` (the whole story on a local
# cluster) and `make test` (everything CI runs). Every other target is a step
# of those two; each one sets itself up, so any of them works on a fresh clone.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP) ## create .venv with the package and its dev tools

tools: ## build the control plane, etcd, kwok and helm into the cache (once per version)
	tests/cluster/build.sh >/dev/null

cluster-up: ## start the local cluster (or reuse it); prints its kubeconfig
	tests/cluster/up.sh

cluster-down: ## stop the local cluster
	tests/cluster/down.sh

kubeconfig-path: ## print the local cluster's kubeconfig path
	@tests/cluster/env.sh kubeconfig

lint: $(STAMP) ## ruff, mypy (strict) and the import layers
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: $(STAMP) ## format and autofix
	$(VENV)/bin/ruff format operator tests bench
	$(VENV)/bin/ruff check --fix operator tests bench

crds: $(STAMP) ## regenerate crds/, the chart's CRDs and docs/api.md from the API models
	$(VENV)/bin/gpupool crds --out crds
	$(VENV)/bin/gpupool crds --out charts/gpupool-operator/crds
	$(PY) -m gpupool.api.reference docs/api.md

unit: $(STAMP) ## fast tests, no cluster
	$(VENV)/bin/pytest -m 'not cluster' -q

test: $(STAMP) ## everything CI runs: lint, unit and cluster tests on the local cluster
	tests/run.sh

bench: $(STAMP) ## print the benchmark figures: planner, then 100 ModelDeployments on a fresh cluster
	$(PY) bench/planner/run.py
	PATH="$$(tests/cluster/env.sh bin):$$PATH" $(PY) bench/scale/run.py models --count 100 --idle 30

bench-scale: $(STAMP) ## the control loop at scale, beside Karpenter's KWOK provider (fresh clusters)
	PATH="$$(tests/cluster/env.sh bin):$$PATH" $(PY) bench/scale/run.py pods --count 100 --peer karpenter
	PATH="$$(tests/cluster/env.sh bin):$$PATH" $(PY) bench/scale/run.py pods --count 1000 --peer karpenter --timeout 1200
	PATH="$$(tests/cluster/env.sh bin):$$PATH" $(PY) bench/scale/run.py pods --count 1000 --peer karpenter --same-nodes --timeout 1200
	PATH="$$(tests/cluster/env.sh bin):$$PATH" $(PY) bench/scale/run.py models --count 1000 --timeout 1200
	PATH="$$(tests/cluster/env.sh bin):$$PATH" $(PY) bench/scale/run.py pods --count 1000 --peer karpenter --kcm-qps 200

demo: $(STAMP) ## the whole story on the local cluster (leaves it running)
	scripts/demo.sh

demo-down: ## stop what `make demo` started
	scripts/demo-down.sh

.PHONY: help venv tools cluster-up cluster-down kubeconfig-path lint fmt crds unit test bench bench-scale demo demo-down
