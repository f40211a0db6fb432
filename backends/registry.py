"""Backends by URI: `SCHEME:SPEC`, for example `hf:./model`, `embedded:smollm2`,
`replay:run.jsonl`, `pool:openai:http://h1/v1,http://h2/v1#model`. Third-party packages add
schemes through the entry-point group `agentic.backends` (name = scheme, value = a factory
`(spec: str, **options) -> Backend`), with no change here; `register_backend` adds one at run
time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from agentic.core import ConfigError, redact_uri
from backends.base import Backend

Factory = Callable[..., Backend]

ENTRY_POINT_GROUP = "agentic.backends"
DEFAULT_BACKEND = "embedded:smollm2"

# built-ins are imported only when used, so `import backends` stays light
_BUILTIN: dict[str, str] = {
    "hf": "backends.hf.backend:from_uri",
    "embedded": "backends.embedded:from_uri",
    "replay": "backends.replay:from_uri",
    "openai": "backends.openai.backend:from_uri",
    "vllm": "backends.vllm.backend:from_uri",
    "pool": "backends.pool:from_uri",
}
_registered: dict[str, Factory] = {}


def register_backend(scheme: str, factory: Factory) -> None:
    if not scheme.isidentifier():
        raise ConfigError(f"backend scheme must be an identifier, got {scheme!r}")
    _registered[scheme] = factory


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_schemes() -> list[str]:
    return sorted(set(_BUILTIN) | set(_registered) | set(_plugins()))


def _factory(scheme: str) -> Factory:
    if scheme in _registered:
        return _registered[scheme]
    if scheme in _BUILTIN:
        module, _, attr = _BUILTIN[scheme].partition(":")
        return getattr(importlib.import_module(module), attr)
    plugins = _plugins()
    if scheme in plugins:
        return plugins[scheme].load()
    raise ConfigError(
        f"unknown backend {scheme!r}; known: {', '.join(known_schemes())} "
        f"(third-party backends register the entry-point group {ENTRY_POINT_GROUP!r})"
    )


def load_backend(uri: str = DEFAULT_BACKEND, **options: Any) -> Backend:
    """Build the backend a URI names. `**options` go to its factory."""
    scheme, sep, spec = uri.partition(":")
    if not sep or not scheme:
        raise ConfigError(
            f"backend URI {redact_uri(uri)!r} is not SCHEME:SPEC, e.g. {DEFAULT_BACKEND!r}"
        )
    return _factory(scheme)(spec, **options)
