"""Shared fixtures. Real models load once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2() -> Iterator[object]:
    """The embedded SmolLM2-135M-Instruct behind `TransformersBackend` (fp32, CPU)."""
    from backends import load_backend

    backend = load_backend("embedded:smollm2")
    yield backend
