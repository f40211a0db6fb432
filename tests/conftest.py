"""Shared fixtures. Real models load once per test session (per worker: `make test` runs two
pytest-xdist workers)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the main process, before any worker starts
        from backends.embedded import EMBEDDED, ensure_local

        # converted once here: workers converting the same model at once would race
        for name in EMBEDDED:
            ensure_local(name)


@pytest.fixture(scope="session")
def smollm2() -> Iterator[object]:
    """The embedded SmolLM2-135M-Instruct behind `TransformersBackend` (fp32, CPU)."""
    from backends import load_backend

    backend = load_backend("embedded:smollm2")
    yield backend


# ---- real servers and the backends the conformance suite runs against -----------------------

CONFORMANCE_DEFAULT = "hf,llama.cpp,vllm-server,replay"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--conformance",
        default=CONFORMANCE_DEFAULT,
        help="comma-separated backends for tests/test_conformance.py: hf, llama.cpp, "
        "vllm-server, replay, vllm (in-process; only inside .venv-vllm)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_backend" in metafunc.fixturenames:
        names = [n.strip() for n in metafunc.config.getoption("conformance").split(",")]
        metafunc.parametrize("conformance_backend", names, indirect=True, scope="session")


@pytest.fixture(scope="session")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from servers import start_llamacpp

    server = start_llamacpp(tmp_path_factory.mktemp("llamacpp"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from servers import start_vllm

    server = start_vllm(tmp_path_factory.mktemp("vllm"))
    yield server
    server.stop()
