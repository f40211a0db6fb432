"""agentic: agents and test-time compute over any language model.

`import agentic` is light: it loads the contracts only; backends and the runner load on use.
"""

from __future__ import annotations

import importlib
from typing import Any

from agentic.core import *  # noqa: F403
from agentic.core import __all__ as _core_all

__version__ = "0.1.0"

_LAZY = {
    "load_backend": "backends",
    "DEFAULT_BACKEND": "backends",
    "Direct": "controllers",
    "run_suite": "agentic.runtime.runner",
    "RunResult": "agentic.runtime.runner",
    "load_suite": "agentic.runtime.suites",
}

__all__ = [*_core_all, *_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agentic' has no attribute {name!r}")
