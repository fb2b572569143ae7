.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One stamp per install: make run needs the runtime dependencies only, make test the
# dev extras too; a dev install is a runtime install as well, so it touches both.
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
# The versions the test suite passed with (make constraints regenerates them).
CONSTRAINTS := constraints.txt
PIP_INSTALL := $(BIN)/pip install --quiet -c $(CONSTRAINTS)
CONSTRAINTS_VENV := build/constraints-venv

.PHONY: help run test lint typecheck pytest bench constraints clean

help:
	@echo "make run          - serve crohooks on 127.0.0.1:8003 (SQLite, in-process worker)"
	@echo "make test         - install, lint, type-check and run every test"
	@echo "make bench        - run the benchmarks and print their ratios"
	@echo "make constraints  - re-pin $(CONSTRAINTS) to the newest versions pyproject.toml allows"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(DEV): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'
	touch $@ $(RUNTIME)

run: $(RUNTIME)
	$(BIN)/python -m crohooks.demo

lint: $(DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(DEV)
	$(BIN)/mypy

pytest: $(DEV)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(DEV)
	$(BIN)/python -m bench

constraints:
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/pip install --quiet --upgrade pip
	$(CONSTRAINTS_VENV)/bin/pip install --quiet -e '.[dev]'
	{ sed -n '/^#/p' $(CONSTRAINTS); $(CONSTRAINTS_VENV)/bin/pip freeze --exclude-editable; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf $(CONSTRAINTS_VENV)
	@echo "$(CONSTRAINTS) re-pinned: run make test, then commit it with what it needed"

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
