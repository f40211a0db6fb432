"""How tokens are produced: the `Backend` protocol and its implementations.

Heavy implementations (torch, transformers) load on first attribute access, so
`import backends` and `from backends import load_backend` stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

from backends.base import Backend, BaseBackend, Capabilities
from backends.registry import DEFAULT_BACKEND, known_schemes, load_backend, register_backend
from backends.structured import Structured, generate_structured

_LAZY = {
    "TransformersBackend": "backends.hf.backend",
    "ReplayBackend": "backends.replay",
    "OpenAIBackend": "backends.openai.backend",
    "VLLMBackend": "backends.vllm.backend",
    "ensure_local": "backends.embedded",
    "ScriptedBackend": "backends.testing",
    "FunctionBackend": "backends.testing",
}

__all__ = [
    "DEFAULT_BACKEND",
    "Backend",
    "BaseBackend",
    "Capabilities",
    "FunctionBackend",
    "OpenAIBackend",
    "ReplayBackend",
    "ScriptedBackend",
    "Structured",
    "TransformersBackend",
    "VLLMBackend",
    "ensure_local",
    "generate_structured",
    "known_schemes",
    "load_backend",
    "register_backend",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'backends' has no attribute {name!r}")
