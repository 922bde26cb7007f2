# `make run` and `make test` set up .venv (once) from the pinned requirements.lock.
# GPU: `make run TORCH="torch==2.11.0 --index-url <your CUDA wheel index>"` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.embedlab-installed
PYTEST_ARGS ?=

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
# Stage commands (`embedlab ...`) resolve from the venv.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run test test-fast clean-outputs help

help:
	@echo "make run   - set up .venv if needed, then dvc repro (the whole pipeline)"
	@echo "make test  - set up .venv if needed, then the test suite"

# Reinstall only when the pinned set or the project metadata changes.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)
