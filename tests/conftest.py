"""Shared fixtures. Real models load once per test session (per worker: `make test` runs two
pytest-xdist workers)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One OpenMP thread per process (servers the tests start inherit it): two xdist workers share two
# cores, and torch's default of a thread per core in every process oversubscribed them; the
# spinning threads made the gateway's load test take 885 s beside the other worker against 146 s
# alone. Servers that take a thread count (llama.cpp's --n_threads) set their own.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Tests that use one of the session's real servers share an xdist worker, so each server starts
# once; the llama.cpp and the vLLM tests are two groups, which two workers run side by side.
SERVER_GROUPS = {"vllm_server": "vllm", "llamacpp_server": "llamacpp"}  # vllm first: a test with
# both servers runs with the vLLM ones (llama.cpp's server starts in seconds)
CONFORMANCE_GROUPS = {"vllm-server": "vllm", "llama.cpp": "llamacpp"}


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the main process, before any worker starts
        if config.getoption("dist", "no") == "loadgroup" and pytest.version_tuple >= (9, 2):
            # pytest 9.2 derives a test's id from a field pytest-xdist 3.8 does not set: the
            # gateway's module would silently run on both workers, two servers at once
            raise pytest.UsageError(
                f"--dist loadgroup does not group tests under pytest {pytest.__version__}; "
                "install pytest<9.2 (pyproject.toml pins it)"
            )
        from backends.embedded import EMBEDDED, ensure_local

        # converted once here: workers converting the same model at once would race
        for name in EMBEDDED:
            ensure_local(name)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        group = next((g for f, g in SERVER_GROUPS.items() if f in names), None)
        if "conformance_backend" in names:
            params = getattr(getattr(item, "callspec", None), "params", {})
            group = CONFORMANCE_GROUPS.get(params.get("conformance_backend", ""), group)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


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


# One start per server and worker, kept to the end of the session: a fixture that a parametrized
# fixture requested (`conformance_backend`) is torn down with it when the parameter changes,
# which happens mid-session when xdist interleaves the parameters' tests.
_RUNNING: dict[str, Any] = {}


def _server(name: str, request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> Any:
    if name not in _RUNNING:
        import servers

        start = {"llamacpp": servers.start_llamacpp, "vllm": servers.start_vllm}[name]
        _RUNNING[name] = server = start(factory.mktemp(name))
        request.session.addfinalizer(server.stop)
    return _RUNNING[name]


@pytest.fixture(scope="session")
def llamacpp_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> object:
    return _server("llamacpp", request, tmp_path_factory)


@pytest.fixture(scope="session")
def vllm_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> object:
    return _server("vllm", request, tmp_path_factory)
