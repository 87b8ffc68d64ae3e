# Two commands on a fresh machine with only Python 3.11: `make run`, `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Reinstall whenever pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing Conch with its extras into $(VENV) (the first time takes a minute or two)..."
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

run: setup
	$(BIN)/conch demo

SOURCES := conch control_plane exporters conch_manifest conch_embedded conch_bench tests

lint: setup
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

bench: setup
	@command -v wrk >/dev/null || echo "note: wrk is not on PATH (apt-get install -y wrk): the triton-http arms will be skipped"
	$(BIN)/conch bench suite

clean:
	rm -rf .conch $(filter-out model_repository/README.md,$(wildcard model_repository/*))
