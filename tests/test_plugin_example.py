"""The backend plugin template in examples/plugin_backend installs and works end to end.

The package is installed with pip into a throwaway folder (never into this environment, so
other tests still see no `echo` scheme) and exercised in subprocesses that put that folder on
PYTHONPATH: discovery through the `agentic.backends` entry point, the echo semantics, recording
and replay through `BaseBackend`'s events, and the `agentic generate` CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from installs import pip_install_target

from backends import known_schemes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin_backend"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/plugin_backend pip-installed into a temporary target folder."""
    root = tmp_path_factory.mktemp("plugin")
    # build from a copy so no build/ or *.egg-info is left inside examples/
    src = root / "src"
    shutil.copytree(
        EXAMPLE,
        src,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "*.pyc"),
    )
    site = root / "site"
    pip_install_target(src, site)
    eps = list(site.glob("agentic_echo_backend-0.1.0.dist-info/entry_points.txt"))
    assert eps, sorted(p.name for p in site.iterdir())
    assert "echo = agentic_echo_backend:from_uri" in eps[0].read_text()
    return site


def _run(site: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def _script(site: Path, code: str, cwd: Path) -> dict[str, Any]:
    """Run `code` in a subprocess with the plugin on its path; it prints one JSON line last."""
    proc = _run(site, ["-c", textwrap.dedent(code)], cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_example_leaves_no_build_artefacts(plugin_site: Path) -> None:
    assert not (EXAMPLE / "build").exists()
    assert not list(EXAMPLE.glob("*.egg-info"))
    # the plugin is not installed in this environment: other tests see no `echo` scheme
    assert "echo" not in known_schemes()


_SEMANTICS = """
import asyncio, json
from agentic.core import Budget, ConfigError, GenerateRequest, Message, SamplingParams
from backends import Backend, known_schemes, load_backend

def user(text):
    return (Message(role="user", content=text),)

def gen(backend, request):
    [gens] = asyncio.run(backend.generate([request]))
    return [g.model_dump(mode="json") for g in gens]

upper = load_backend("echo:upper")
plain = load_backend("echo:")
out = {
    "schemes": known_schemes(),
    "is_backend": isinstance(upper, Backend),
    "names": [upper.name, plain.name, load_backend("echo:plain").name],
    "caps": upper.capabilities.model_dump(),
    "count": [upper.count_tokens("a b  c"), upper.count_tokens([
        Message(role="system", content="be brief"), Message(role="user", content="hi there")])],
    "one_word": gen(upper, GenerateRequest.chat("hello world", max_tokens=1)),
    "whole": gen(upper, GenerateRequest.chat("hello world", system="sys prompt")),
    "plain": gen(plain, GenerateRequest(prompt="Keep  my case")),
    "stop": gen(upper, GenerateRequest.chat("one two. three four", stop=[" FOUR", "."])),
    "stop_after_length": gen(upper, GenerateRequest.chat("a b c. d", max_tokens=2, stop=".")),
    "prefix": gen(upper, GenerateRequest(messages=user("step one step two"), prefix="STEP ONE ")),
    "other_prefix": gen(upper, GenerateRequest(messages=user("abc"), prefix="xyz")),
    "n3": gen(upper, GenerateRequest.chat("hi you", n=3)),
}
with Budget() as budget:
    asyncio.run(upper.generate([GenerateRequest.chat("a b", n=4), GenerateRequest(prompt="c")]))
out["budget"] = budget.spent.model_dump()
errors = []
for uri in ("echo:shout", "echo:UPPER"):
    try:
        load_backend(uri)
    except ConfigError as e:
        errors.append(str(e))
out["errors"] = errors
try:
    asyncio.run(upper.generate(GenerateRequest(prompt="not a list")))
except ConfigError as e:
    out["validation"] = str(e)
print(json.dumps(out))
"""


def test_plugin_is_discovered_and_echoes(plugin_site: Path, tmp_path: Path) -> None:
    out = _script(plugin_site, _SEMANTICS, tmp_path)
    assert "echo" in out["schemes"]
    assert out["is_backend"]
    assert out["names"] == ["echo:upper", "echo:plain", "echo:plain"]
    assert out["caps"]["prefix"] is True and out["caps"]["max_batch"] is None
    assert out["caps"]["logprobs"] is False and out["caps"]["score"] is False
    assert out["count"] == [3, 4]

    [g] = out["one_word"]
    assert (g["text"], g["finish_reason"], g["stop_reason"]) == ("HELLO", "length", None)
    assert g["usage"]["prompt_tokens"] == 2
    assert g["usage"]["completion_tokens"] == 1
    assert g["usage"]["model_calls"] == 1

    [g] = out["whole"]
    assert (g["text"], g["finish_reason"]) == ("HELLO WORLD", "stop")
    assert g["usage"]["prompt_tokens"] == 4  # system + user words

    [g] = out["plain"]
    assert g["text"] == "Keep  my case"  # spacing kept, case kept

    # the earliest stop string wins; text before it is kept
    [g] = out["stop"]
    assert (g["text"], g["finish_reason"], g["stop_reason"]) == ("ONE TWO", "stop", ".")
    # the length limit comes before the stop string: no stop_reason
    [g] = out["stop_after_length"]
    assert (g["text"], g["finish_reason"], g["stop_reason"]) == ("A B", "length", None)

    # prefix continuation: prefix + text is the echo
    [g] = out["prefix"]
    assert g["text"] == "STEP TWO"
    assert g["usage"]["prompt_tokens"] == 4 + 2
    [g] = out["other_prefix"]
    assert g["text"] == "ABC"

    gens = out["n3"]
    assert len(gens) == 3
    assert {g["text"] for g in gens} == {"HI YOU"}
    assert [g["usage"]["model_calls"] for g in gens] == [1, 0, 0]
    assert [g["usage"]["prompt_tokens"] for g in gens] == [2, 0, 0]
    assert [g["usage"]["completion_tokens"] for g in gens] == [2, 2, 2]

    # BaseBackend charges the budget: one call per request, every sample's tokens
    assert out["budget"]["model_calls"] == 2
    assert out["budget"]["prompt_tokens"] == 2 + 1
    assert out["budget"]["completion_tokens"] == 4 * 2 + 1

    assert len(out["errors"]) == 2
    for spec, msg in zip(("shout", "UPPER"), out["errors"], strict=True):
        assert repr(spec) in msg
        assert "echo:plain" in msg and "echo:upper" in msg
    assert "single request" in out["validation"]


_RECORD_REPLAY = """
import asyncio, json, sys
from agentic.core import GenerateRequest, JSONLSink, SamplingParams, Tracer, read_events
from backends import load_backend
from backends.replay import ReplayBackend

trace = sys.argv[1]
requests = [
    GenerateRequest.chat("hello world", max_tokens=1),
    GenerateRequest.chat("one two. three", stop="."),
    GenerateRequest(prompt="x y z", params=SamplingParams(n=3)),
]
sink = JSONLSink(trace)
with Tracer([sink]).activate():
    live = asyncio.run(load_backend("echo:upper").generate(requests))
sink.close()
events = [e for e in read_events(trace)]
replay = ReplayBackend(trace, backend="echo:upper")
again = asyncio.run(replay.generate(requests))
dump = lambda rs: [[g.model_dump(mode="json") for g in gens] for gens in rs]
print(json.dumps({
    "types": [e.type for e in events],
    "backends": [e.payload["backend"] for e in events],
    "keys": [e.payload["key"] for e in events],
    "request_keys": [r.key() for r in requests],
    "recorded_backends": replay.recorded_backends,
    "live": dump(live),
    "replayed": dump(again),
}))
"""


def test_plugin_calls_are_recorded_and_replayed(plugin_site: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    proc = _run(plugin_site, ["-c", textwrap.dedent(_RECORD_REPLAY), str(trace)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["types"] == ["backend.generate"] * 3
    assert out["backends"] == ["echo:upper"] * 3
    assert out["keys"] == out["request_keys"]
    assert out["recorded_backends"] == ["echo:upper"]
    assert [[g["text"] for g in gens] for gens in out["live"]] == [
        ["HELLO"],
        ["ONE TWO"],
        ["X Y Z"] * 3,
    ]
    assert out["replayed"] == out["live"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--backend", "echo:upper", "hello"], "HELLO"),
        (["-b", "echo:upper", "--max-tokens", "2", "hello plugin world"], "HELLO PLUGIN"),
        (["-b", "echo:", "--raw", "Raw Text"], "Raw Text"),
    ],
)
def test_cli_generates_with_plugin(
    plugin_site: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    proc = _run(
        plugin_site, ["-c", "from agentic.cli import main; main()", "generate", *args], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_cli_bad_spec_is_a_clear_error(plugin_site: Path, tmp_path: Path) -> None:
    proc = _run(
        plugin_site,
        ["-c", "from agentic.cli import main; main()", "generate", "-b", "echo:shout", "hi"],
        tmp_path,
    )
    assert proc.returncode == 2
    assert "'shout'" in proc.stderr and "echo:upper" in proc.stderr
    assert "Traceback" not in proc.stderr
