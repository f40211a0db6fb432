"""The controller registry: every type builds from plain data, mistakes are one line naming the
type and the field, a type added at run time or by an installed package's entry point parses,
nests, takes its CLI flags, builds and runs like a built-in one."""

from __future__ import annotations

import asyncio
import itertools
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from agentic.cli.spec import controller_spec
from agentic.core import ConfigError, Context, GenerateRequest, Outcome, SamplingParams, Task
from agentic.runtime.suites import load_suite
from agentic.specs import registry
from agentic.specs.pipeline import PSRSpec, memory_nodes
from agentic.specs.registry import (
    BuildContext,
    Spec,
    controller_types,
    parse_controller_spec,
    register_controller,
    spec_class,
)
from agentic.specs.searches import SearchSpec
from backends.base import Capabilities
from backends.testing import FunctionBackend

REPO = Path(__file__).resolve().parents[1]
BUILTIN = sorted(registry._BUILTIN)


def _backend(*replies: str) -> FunctionBackend:
    cycle = itertools.cycle(replies or ("4",))
    return FunctionBackend(
        lambda request: next(cycle), capabilities=Capabilities(prefix=True, score=True)
    )


def _minimal(kind: str, tmp_path: Path) -> dict[str, Any]:
    """The least data that builds `kind` with no model download (hashing embedders)."""
    if kind in ("ace", "cases"):
        return {"type": kind, "store": str(tmp_path / f"{kind}.db"), "embedder": "hashing"}
    if issubclass(spec_class(kind), SearchSpec):  # the default reward, the value model, loads a
        # second model: not here (tests/test_value_model.py builds it on the real SmolLM2)
        return {"type": kind, "reward": "confidence"}
    return {"type": kind}


def test_the_builtin_types_are_the_documented_ones() -> None:
    assert BUILTIN == sorted(
        "direct bon beam pf epf astar sc cyberv agent psr ead router ace cases".split()
    )
    assert set(BUILTIN) <= set(controller_types())


@pytest.mark.parametrize("kind", BUILTIN)
def test_each_type_builds_from_a_dict_and_round_trips(kind: str, tmp_path: Path) -> None:
    cls = spec_class(kind)
    assert cls.model_fields["type"].default == kind
    # the CLI options a type takes map onto fields it has
    assert set(cls.cli_flags.values()) <= set(cls.model_fields), cls.cli_flags
    spec = parse_controller_spec(_minimal(kind, tmp_path))
    assert type(spec) is cls and spec.type == kind
    assert parse_controller_spec(spec.model_dump(mode="json")) == spec
    assert parse_controller_spec(spec.model_dump(mode="json", exclude_defaults=True)) == spec
    backend, loaded = _backend(), []

    def load(uri: str) -> FunctionBackend:
        loaded.append(uri)
        return _backend()

    ctx = BuildContext(backend, load_suite("basic_arithmetic", n=1), load)
    controller = ctx.build(spec)
    assert callable(controller)
    assert loaded == (["embedded:gemma3-270m"] if kind == "ead" else [])
    assert memory_nodes(spec) == (["controller"] if kind in ("ace", "cases") else [])
    asyncio.run(ctx.aclose())


def test_a_type_name_gives_its_defaults_and_a_spec_passes_through() -> None:
    assert parse_controller_spec("pf") == spec_class("pf")()
    spec = PSRSpec(max_rounds=1)
    assert parse_controller_spec(spec) is spec


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (
            {"type": "pf", "widht": 2},
            r"^controller 'pf': unknown field 'widht'; its fields: .*samples",
        ),
        ({"type": "foo"}, r"^unknown controller type 'foo'; known: ace, agent, astar, .*, sc\b"),
        ({"samples": 3}, r"^a controller spec needs a 'type'; known: ace"),
        ({"type": 3}, r"^unknown controller type 3; known:"),
        ([1, 2], r"^a controller spec is a mapping with a 'type', not list"),
        ({"type": "ace"}, r"^controller 'ace': store: Field required"),
        ({"type": "psr", "inner": {"type": "foo"}}, r"^inner: unknown controller type 'foo'"),
        (
            {"type": "psr", "inner": {"type": "router", "reasoning": {"type": "sc", "n": 0}}},
            r"^controller 'sc' at inner\.reasoning: n: Input should be greater than or equal to 1",
        ),
        (
            {"type": "router", "agentic": {"type": "bon", "reward": "jduge"}},
            r"^controller 'bon' at agentic: reward: .*'jduge' is not a verifier",
        ),
        ({"type": "pf", "bad\nkey": 1}, r"^controller 'pf': unknown field 'bad\\nkey'"),
        ("foo", r"^unknown controller type 'foo'; known: .*; or a \.yaml/\.json spec file"),
    ],
)
def test_mistakes_are_one_line_naming_type_and_field(data: Any, line: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_controller_spec(data)
    message = str(e.value)
    assert "\n" not in message and re.search(line, message), message


def test_two_mistakes_in_two_nodes_are_both_named() -> None:
    data = {"type": "router", "widht": 1, "instant": {"type": "direct", "max_tokens": 0}}
    with pytest.raises(ConfigError) as e:
        parse_controller_spec(data)
    assert "controller 'router': unknown field 'widht'" in str(e.value)
    assert "controller 'direct' at instant: max_tokens: Input should be" in str(e.value)


def test_files_false_reads_no_file(tmp_path: Path) -> None:
    spec_file = tmp_path / "p.json"
    spec_file.write_text('{"type": "sc", "n": 2}')
    assert parse_controller_spec(str(spec_file)) == parse_controller_spec({"type": "sc", "n": 2})
    with pytest.raises(ConfigError, match=r"unknown controller type .*; or inline JSON$"):
        parse_controller_spec(str(spec_file), files=False)
    assert parse_controller_spec('{"type": "sc", "n": 2}', files=False).type == "sc"


# ---- a controller of our own ------------------------------------------------------------------


class Shortest:
    """n samples; the shortest answer wins."""

    def __init__(self, backend: Any, n: int) -> None:
        self.backend, self.n = backend, n

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        params = SamplingParams(n=self.n, temperature=1.0, max_tokens=32)
        request = GenerateRequest(prompt=task.input, params=params)
        [samples] = await self.backend.generate([request])
        best = min(samples, key=lambda g: len(g.text))
        return Outcome(task_id=task.id, output=best.text, info={"n": len(samples)})


class ShortestSpec(Spec):
    type: Literal["shortest"] = "shortest"
    n: int = 4

    cli_flags: ClassVar[dict[str, str]] = {"samples": "n"}

    def build(self, ctx: BuildContext) -> Shortest:
        return Shortest(ctx.backend, self.n)


def _runs_and_nests(kind: str) -> None:
    """`kind` (a ShortestSpec type) parses, nests in a pipeline, takes --samples, builds, runs."""
    spec = parse_controller_spec({"type": kind, "n": 3})
    assert spec.type == kind and spec.model_dump() == {"type": kind, "n": 3}
    assert controller_spec(kind, {"samples": 2}) == parse_controller_spec({"type": kind, "n": 2})
    with pytest.raises(ConfigError, match=f"--width does not apply to --controller {kind}"):
        controller_spec(kind, {"width": 2})
    pipeline = parse_controller_spec({"type": "psr", "max_rounds": 0, "inner": {"type": kind}})
    assert isinstance(pipeline, PSRSpec) and pipeline.inner is not None
    assert parse_controller_spec(pipeline.model_dump(mode="json")) == pipeline
    with pytest.raises(ConfigError, match=f"controller '{kind}' at inner: unknown field 'm'"):
        parse_controller_spec({"type": "psr", "inner": {"type": kind, "m": 1}})
    backend = _backend("a long answer", "4", "four")
    controller = BuildContext(backend, load_suite("basic_arithmetic", n=1)).build(spec)
    out = asyncio.run(controller(Task(id="q", input="2 + 2 =")))  # type: ignore[arg-type]
    assert (out.output, out.info) == ("4", {"n": 3})
    assert len(backend.requests) == 1 and backend.requests[0].params.n == 3


def test_a_type_registered_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_registered", {})
    assert "shortest" not in controller_types()
    assert register_controller(ShortestSpec) is ShortestSpec
    assert "shortest" in controller_types() and spec_class("shortest") is ShortestSpec
    _runs_and_nests("shortest")
    with pytest.raises(ConfigError, match="takes a Spec subclass"):
        register_controller(dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="declares no controller name"):
        register_controller(Spec)

    class Unbuildable(Spec):
        type: Literal["unbuildable"] = "unbuildable"

    with pytest.raises(ConfigError, match="does not define build"):
        register_controller(Unbuildable)


# ---- a plugin: an installed distribution with an `agentic.controllers` entry point -------------

PLUGIN = textwrap.dedent(
    """
    from typing import ClassVar, Literal

    from agentic.specs.registry import BuildContext, Spec
    from test_controller_registry import Shortest


    class EchoSpec(Spec):
        type: Literal["echo"] = "echo"
        n: int = 4

        cli_flags: ClassVar[dict[str, str]] = {"samples": "n"}

        def build(self, ctx: BuildContext) -> Shortest:
            return Shortest(ctx.backend, self.n)


    class NotASpec:
        pass
    """
)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution on sys.path, as pip would install it, declaring three controllers: `echo`
    (right), `echo2` (its class says `echo`) and `broken` (not a Spec)."""
    (tmp_path / "agentic_test_plugin.py").write_text(PLUGIN)
    info = tmp_path / "agentic_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: agentic-test-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[agentic.controllers]\n"
        "echo = agentic_test_plugin:EchoSpec\n"
        "echo2 = agentic_test_plugin:EchoSpec\n"
        "broken = agentic_test_plugin:NotASpec\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("agentic_test_plugin", None)


def test_a_plugin_controller_from_its_entry_point(plugin: Path) -> None:
    assert {"echo", "echo2", "broken"} <= set(controller_types())
    assert "agentic_test_plugin" not in sys.modules  # listed without importing it
    assert spec_class("echo").__module__ == "agentic_test_plugin"
    _runs_and_nests("echo")
    with pytest.raises(ConfigError, match=r"controller 'echo2': .*declares type 'echo', not"):
        parse_controller_spec({"type": "echo2"})
    with pytest.raises(ConfigError, match=r"controller 'broken': .*is not a Spec subclass"):
        parse_controller_spec("broken")


def test_without_the_plugin_its_type_is_unknown() -> None:
    assert "echo" not in controller_types()
    with pytest.raises(ConfigError, match=r"unknown controller type 'echo'.*agentic\.controllers"):
        parse_controller_spec({"type": "echo"})


# ---- the documentation's example --------------------------------------------------------------


def test_the_writing_a_controller_example_runs() -> None:
    page = (REPO / "docs" / "controllers.md").read_text(encoding="utf-8")
    section = page[page.index("## Writing a controller") :]
    code = re.search(r"```python\n(.*?)^```", section, re.S | re.M)
    assert code is not None
    proc = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "'4' {'n': 3}"
    assert lines[1] == "{'type': 'psr', 'inner': {'type': 'shortest'}}"
    assert lines[2].startswith("controller 'shortest' at inner: unknown field 'm'")
