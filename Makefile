# `make run` and `make test` set up .venv (once) from the pinned requirements.lock.
# GPU: `make run TORCH="torch==2.11.0 --index-url <your CUDA wheel index>"` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# The installer of the locked set (PyPI), pinned at the version requirements-flower.lock holds.
UV ?= uv==0.13.9
BIN := $(VENV)/bin
# uv's install into the environment at $(1), bytecode compiled (see $(STAMP) below).
uv_install = $(1)/bin/uv pip install -q --python $(1)/bin/python --compile-bytecode
STAMP := $(VENV)/.embedlab-installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist; whole files per process, so a module's fixture starts once,
# in the order tests/conftest.py gives them: the shared tiny pipeline first).
TEST_WORKERS ?= 2

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
# Stage commands (`embedlab ...`) resolve from the venv.
export PATH := $(abspath $(BIN)):$(PATH)

FLOWER_VENV ?= .venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.embedlab-installed

.PHONY: setup run run-paper test test-fast test-flower flower-env clean-outputs help lint docs gpu-wheels

help:
	@echo "make run   - set up .venv if needed, then dvc repro (the whole pipeline, ~20-29 min on 2 cores, by host)"
	@echo "make run-paper - params/paper.yaml's paper-scale budgets onto params.yaml, then dvc repro (hours)"
	@echo "make test  - set up .venv (and .venv-flower) if needed, then the test suites"
	@echo "make lint  - ruff check (also the first step of make test)"
	@echo "make docs  - the documentation site (mkdocs, offline) into site/"
	@echo "make flower-env - the separate Flower environment (.venv-flower, requirements-flower.lock)"

# Reinstall only when the pinned set or the project metadata changes. torch comes through pip
# (TORCH is pip syntax, and pip reads a machine's own wheel folders); the locked rest through uv,
# the same pinned set in less time (both environments on a fresh clone here: 57.5 s against
# pip's 95.2 s, benchmarks/results/make_test.json).
# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on this machine),
# skipping it would make every process compile torch from source on every import
# (make test: 10 min -> 14).
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24" $(UV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(call uv_install,$(VENV)) -c requirements.lock -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/dvc repro

# The paper-scale budgets (params/paper.yaml) merged onto params.yaml, then the pipeline: hours
# on 2 cores (docs/pipeline.md), for a GPU or a long night. `git checkout params.yaml` undoes it.
run-paper: setup
	$(BIN)/embedlab preset paper
	$(BIN)/dvc repro

# Flower (flwr 1.42) pins a fastapi that prefect cannot share: its own environment, with
# the project installed without dependencies (the federated core needs torch, lightning,
# pydantic, numpy, which requirements-flower.lock pins at the main lock's versions).
$(FLOWER_STAMP): requirements-flower.lock pyproject.toml
	@test -x $(FLOWER_VENV)/bin/python || $(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install -q --upgrade "pip>=24" $(UV)
	$(FLOWER_VENV)/bin/python -m pip install -q $(TORCH)
	$(call uv_install,$(FLOWER_VENV)) -r requirements-flower.lock
	$(call uv_install,$(FLOWER_VENV)) --no-deps -e .
	@touch $(FLOWER_STAMP)

flower-env: $(FLOWER_STAMP)

test-flower: flower-env
	FLWR_HOME=$(abspath $(FLOWER_VENV))/flwr-home $(FLOWER_VENV)/bin/python -m pytest --confcutdir=tests/flower -p no:cacheprovider tests/flower $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks flows

docs: setup
	$(BIN)/mkdocs build --strict

# The wheels a lent GPU machine lacks, into .whl/ (benchmarks/gpu_check.sh; benchmarks/README.md).
gpu-wheels:
	bash benchmarks/gpu_check.sh wheels

# The two environments install side by side (one pip process each: 99 s instead of ~150 s on a
# fresh clone here), then lint (seconds), then the Flower test, so the main suite's summary is
# the closing line. (The Flower test beside the main suite saved nothing: 35 s alone, 174 s
# under the main suite's load, which it slowed in turn.)
test:
	@$(MAKE) --no-print-directory -j2 setup flower-env
	@$(MAKE) --no-print-directory lint test-flower
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=10 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

# --- Scheduled runs (Prefect). See README "Scheduled runs". ---------------------------
PREFECT_PORT ?= 4200
POOL ?= embedlab
PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api

# Only these targets talk to the server; `make run` / `make test` never need one.
pool deploy worker: export PREFECT_API_URL := $(PREFECT_API_URL)

.PHONY: server pool deploy worker

server: setup   ## a local Prefect server (UI at http://127.0.0.1:$(PREFECT_PORT))
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

pool: setup     ## the process work pool the deployments use (idempotent)
	$(BIN)/prefect work-pool inspect $(POOL) >/dev/null 2>&1 || $(BIN)/prefect work-pool create $(POOL) --type process

deploy: pool    ## register nightly-retrain, train-model, validate-data from prefect.yaml
	$(BIN)/prefect --no-prompt deploy --all

worker: setup   ## run flow runs from the pool in this checkout
	$(BIN)/prefect worker start --pool $(POOL)
