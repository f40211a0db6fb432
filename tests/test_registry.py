"""Backends by URI: built-in schemes, run-time registration and entry-point plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from installs import pip_install_target

from agentic.core import ConfigError, GenerateRequest, Generation
from backends import BaseBackend, known_schemes, load_backend, register_backend, registry


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    saved = dict(registry._registered)
    yield
    registry._registered.clear()
    registry._registered.update(saved)


def test_unknown_scheme_lists_known_schemes() -> None:
    with pytest.raises(ConfigError) as ei:
        load_backend("nosuchbackend:whatever")
    msg = str(ei.value)
    assert "'nosuchbackend'" in msg
    for scheme in ("hf", "embedded", "replay"):
        assert scheme in msg
        assert scheme in known_schemes()
    assert "agentic.backends" in msg  # tells a plugin author where to register


@pytest.mark.parametrize("uri", ["no-colon-here", "", ":spec-without-scheme"])
def test_uri_without_scheme_names_the_uri(uri: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_backend(uri)
    assert repr(uri) in str(ei.value)
    assert "SCHEME:SPEC" in str(ei.value)


class _Dummy(BaseBackend):
    name = "dummy"

    def __init__(self, spec: str, **options: Any) -> None:
        self.spec, self.options = spec, options

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        return [[Generation(text=self.spec)] for _ in requests]

    def count_tokens(self, text_or_messages: str | Any) -> int:
        return 0


async def test_register_backend_then_load_calls_factory_with_spec() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def factory(spec: str, **options: Any) -> _Dummy:
        calls.append((spec, options))
        return _Dummy(spec, **options)

    register_backend("x", factory)
    assert "x" in known_schemes()
    b = load_backend("x:spec")
    assert calls == [("spec", {})]
    assert isinstance(b, _Dummy) and b.spec == "spec"
    # everything after the first colon is the spec; options pass through
    b2 = load_backend("x:http://127.0.0.1:8000/v1#model", timeout=3)
    assert calls[-1] == ("http://127.0.0.1:8000/v1#model", {"timeout": 3})
    assert isinstance(b2, _Dummy)
    out = await b.generate([GenerateRequest(prompt="p")])
    assert out[0][0].text == "spec"


def test_registered_scheme_overrides_builtin() -> None:
    register_backend("replay", lambda spec, **o: _Dummy(spec))
    b = load_backend("replay:/does/not/matter.jsonl")
    assert isinstance(b, _Dummy)


@pytest.mark.parametrize("scheme", ["", "has-dash", "has:colon", "1abc", "a b"])
def test_register_backend_rejects_bad_scheme(scheme: str) -> None:
    with pytest.raises(ConfigError, match="identifier"):
        register_backend(scheme, lambda spec, **o: _Dummy(spec))


def test_replay_missing_file_names_path() -> None:
    with pytest.raises(FileNotFoundError, match=r"/nonexistent\.jsonl"):
        load_backend("replay:/nonexistent.jsonl")


# --------------------------------------------------------------------- a third-party plugin

_PYPROJECT = """\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "agentic-echo-plugin"
version = "0.0.1"

[project.entry-points."agentic.backends"]
echo = "agentic_echo_plugin:make"

[tool.setuptools]
packages = ["agentic_echo_plugin"]
"""

_PLUGIN = '''\
"""A throwaway third-party backend: echoes the prompt and its spec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentic.core import GenerateRequest, Generation, Message, Usage
from backends.base import BaseBackend, Capabilities


class EchoBackend(BaseBackend):
    capabilities = Capabilities(prefix=True)

    def __init__(self, spec: str, **opts: Any) -> None:
        self.spec = spec
        self.name = f"echo:{spec}"
        self.opts = opts

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        out = []
        for r in requests:
            text = r.prompt if r.prompt is not None else r.messages[-1].content
            reply = f"{text} {self.spec}"
            usage = Usage(
                prompt_tokens=self.count_tokens(text),
                completion_tokens=self.count_tokens(reply),
                model_calls=1,
            )
            out.append([Generation(text=reply, usage=usage)])
        return out

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        if isinstance(text_or_messages, str):
            return len(text_or_messages.split())
        return sum(len(m.content.split()) for m in text_or_messages)


def make(spec: str, **opts: Any) -> EchoBackend:
    return EchoBackend(spec, **opts)
'''

_CLIENT = """
import asyncio, json
from backends import load_backend, known_schemes
from backends.base import Backend
from agentic.core import Budget, GenerateRequest, Tracer
b = load_backend("echo:hi")
assert "echo" in known_schemes()
assert isinstance(b, Backend)
events = []
with Budget() as budget, Tracer([events.append]).activate():
    gens = asyncio.run(b.generate([GenerateRequest(prompt="ping")]))
print(gens[0][0].text)
print(json.dumps({
    "name": b.name,
    "count": b.count_tokens("one two three"),
    "model_calls": budget.spent.model_calls,
    "events": [e.type for e in events],
}))
"""


def test_entry_point_plugin_is_discovered(tmp_path: Path) -> None:
    pkg = tmp_path / "agentic_echo_plugin_src"
    (pkg / "agentic_echo_plugin").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(_PYPROJECT, encoding="utf-8")
    (pkg / "agentic_echo_plugin" / "__init__.py").write_text(_PLUGIN, encoding="utf-8")
    site = tmp_path / "site"

    pip_install_target(pkg, site)
    assert list(site.glob("agentic_echo_plugin*.dist-info/entry_points.txt"))

    # the scheme is unknown to this process (the plugin is not on its path)
    assert "echo" not in known_schemes()

    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CLIENT)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    text, info = proc.stdout.strip().splitlines()[-2:]
    assert text == "ping hi"
    data = json.loads(info)
    assert data["name"] == "echo:hi"
    assert data["count"] == 3
    # BaseBackend's bookkeeping works for a plugin: budget charged, event emitted
    assert data["model_calls"] == 1
    assert data["events"] == ["backend.generate"]
