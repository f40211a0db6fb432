"""Pipeline specs: parsing (names, YAML, JSON), clear errors, nested builds, and a composed
pipeline run and replayed through the CLI on the real model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_cli import agentic

from agentic.agents import ToolAgent
from agentic.core import ConfigError, StoreError
from agentic.runtime.suites import load_suite
from agentic.specs.pipeline import (
    AgentSpec,
    PSRSpec,
    RouterSpec,
    SelfConsistencySpec,
    memory_nodes,
)
from agentic.specs.registry import BuildContext, parse_controller_spec
from agentic.specs.searches import EntropicParticleFilterSpec, ParticleFilterSpec
from backends.base import Capabilities
from backends.testing import ScriptedBackend
from controllers import (
    ACE,
    A2FMRouter,
    CaseMemoryAgent,
    CyberVLoop,
    Direct,
    ProgressiveSelfReflection,
    SelfConsistency,
)

COMPOSED = """
type: psr                 # the router's answer passes progressive self-reflection
max_rounds: 1
chunk_tokens: 16
max_tokens: 48
inner:
  type: router
  policy: self-tag
  instant: {type: direct, max_tokens: 24}
  reasoning: {type: sc, n: 2, max_tokens: 32}
  agentic: {type: agent, tools: [calculator], max_steps: 3}
"""


def test_names_files_and_inline_json_parse_to_the_same_specs(tmp_path: Path) -> None:
    assert parse_controller_spec("sc") == SelfConsistencySpec(type="sc")
    assert parse_controller_spec("pf") == ParticleFilterSpec()
    assert parse_controller_spec("router") == RouterSpec(type="router")
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text(COMPOSED)
    spec = parse_controller_spec(str(yaml_file))
    assert isinstance(spec, PSRSpec) and isinstance(spec.inner, RouterSpec)
    assert spec.inner.reasoning == SelfConsistencySpec(type="sc", n=2, max_tokens=32)
    assert spec.inner.agentic == AgentSpec(type="agent", tools=("calculator",), max_steps=3)
    json_file = tmp_path / "p.json"
    json_file.write_text(json.dumps(spec.model_dump(mode="json")))
    assert (
        parse_controller_spec(str(json_file))
        == spec
        == parse_controller_spec(json.dumps(spec.model_dump()))
    )
    assert parse_controller_spec(spec.model_dump()) == spec  # the dict a run records


def test_a_pipeline_round_trips_through_yaml(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    source = tmp_path / "p.yaml"
    epf = "reasoning: {type: epf, samples: 4, lookahead: false}"
    source.write_text(COMPOSED.replace("reasoning: {type: sc, n: 2, max_tokens: 32}", epf))
    spec = parse_controller_spec(str(source))
    assert isinstance(spec, PSRSpec) and isinstance(spec.inner, RouterSpec)
    assert spec.inner.reasoning == EntropicParticleFilterSpec(samples=4, lookahead=False)
    for dump in (spec.model_dump(mode="json"), spec.model_dump(mode="json", exclude_defaults=True)):
        again = tmp_path / "again.yaml"
        again.write_text(yaml.safe_dump(dump))
        assert parse_controller_spec(str(again)) == spec
    # every nested node keeps its own type's fields in the dump, and only those
    reasoning = spec.model_dump()["inner"]["reasoning"]
    assert reasoning["type"] == "epf" and reasoning["lookahead"] is False
    assert "width" not in reasoning and "max_tokens" not in reasoning


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            '{"type": "router", "reasoning": {"type": "sc", "n": 0}}',
            "controller 'sc' at reasoning: n: Input should",
        ),
        ('{"type": "psr", "inner": {"type": "nope"}}', "inner: unknown controller type 'nope'"),
        ('{"type": "agent", "tools": ["browser"]}', "tools.0: Input should be 'calculator'"),
        ('{"type": "cyberv", "theta": 2}', "theta: Input should be less than or equal to 1"),
        ('{"type": "sc", "m": 3}', "controller 'sc': unknown field 'm'"),
        ('{"type": ', "inline JSON is invalid"),
        ("missing.yaml", "unknown controller type 'missing.yaml'; known: .*or a .yaml/.json"),
    ],
)
def test_bad_specs_name_the_field(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")) as e:
        parse_controller_spec(text)
    assert "\n" not in str(e.value)


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: [sc\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        parse_controller_spec(str(bad))


def test_nested_specs_build_nested_controllers(tmp_path: Path) -> None:
    def scripted(text: str) -> ScriptedBackend:
        b = ScriptedBackend(lambda prefix, j: (text, True))
        b.capabilities = Capabilities(prefix=True, score=True)  # builds only: never called
        return b

    backend = scripted("4")
    suite = load_suite("basic_arithmetic", n=2)
    loaded: list[str] = []

    def load(uri: str) -> ScriptedBackend:
        loaded.append(uri)
        return scripted("judge")

    spec_file = tmp_path / "p.yaml"
    spec_file.write_text(COMPOSED.replace("max_rounds: 1", "max_rounds: 1\njudge: other:judge"))
    builder = BuildContext(backend, suite, load)
    psr = builder.build(parse_controller_spec(str(spec_file)))
    assert isinstance(psr, ProgressiveSelfReflection) and loaded == ["other:judge"]
    router = psr.inner
    assert isinstance(router, A2FMRouter)
    assert isinstance(router.modes["instant"], Direct)
    assert isinstance(router.modes["reasoning"], SelfConsistency)
    agent = router.modes["agentic"]
    assert isinstance(agent, ToolAgent) and list(agent.tools) == ["calculator"]
    assert isinstance(builder.build(parse_controller_spec("cyberv")), CyberVLoop)
    with pytest.raises(ConfigError, match="search_docs"):
        builder.build({"type": "agent", "tools": ["search_docs"]})
    with pytest.raises(ConfigError, match=r"router\.path"):
        builder.build({"type": "router", "policy": "learned"})


@pytest.mark.slow
def test_a_composed_pipeline_runs_and_replays_from_the_cli(tmp_path: Path) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(COMPOSED)
    record = tmp_path / "run.jsonl"
    res = agentic(
        "run", "--controller", str(spec), "--n", "3", "--record", str(record),
        "--json", str(tmp_path / "out.json"),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in record.read_text().splitlines()]
    start = next(e for e in events if e["type"] == "run.start")
    assert start["payload"]["config"]["controller"]["inner"]["type"] == "router"
    kinds = {e["type"] for e in events}
    assert {"router.decision", "psr.rounds", "psr.done"} <= kinds  # both layers ran
    outcomes = json.loads((tmp_path / "out.json").read_text())["outcomes"]
    assert len(outcomes) == 3 and all(o["info"].get("mode") for o in outcomes)
    again = agentic("replay", str(record))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "identical" in again.stdout


def test_memory_nodes_build_on_their_stores_and_close_them(tmp_path: Path) -> None:
    backend = ScriptedBackend(lambda prefix, j: ("4", True))
    suite = load_suite("basic_arithmetic", n=2)
    store = tmp_path / "memory.db"
    spec = parse_controller_spec(
        {
            "type": "cases",
            "store": str(store),
            "embedder": "hashing",
            "executor": {"type": "ace", "store": str(store), "embedder": "hashing", "learn": False},
        }
    )
    assert memory_nodes(spec) == ["controller", "controller.executor"]
    builder = BuildContext(backend, suite, lambda uri: backend)
    agent = builder.build(spec)
    assert isinstance(agent, CaseMemoryAgent) and agent.bank.name == "default"
    assert isinstance(agent.executor, ACE) and agent.executor.online_learning is False
    asyncio.run(builder.aclose())
    # the last connection to close checkpoints the write-ahead log and removes it
    assert store.exists() and not Path(f"{store}-wal").exists()
    with pytest.raises(ConfigError, match=r"store: Field required"):
        parse_controller_spec({"type": "ace"})
    with pytest.raises(ConfigError, match=r"executor: unknown controller type 'nope'"):
        parse_controller_spec({"type": "cases", "store": "x.db", "executor": {"type": "nope"}})
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"not a database at all")
    with pytest.raises(StoreError, match="not an SQLite file"):
        BuildContext(backend, suite, lambda uri: backend).build(
            {"type": "ace", "store": str(foreign)}
        )
    assert foreign.read_bytes() == b"not a database at all"


@pytest.mark.slow
def test_case_memory_pipeline_learns_across_runs_from_the_cli(tmp_path: Path) -> None:
    """Two `agentic run`s on one store: the second run's plans see the first run's cases;
    replay refuses a pipeline with memory."""
    store = tmp_path / "cases.db"
    spec = json.dumps(
        {
            "type": "cases",
            "store": str(store),
            "embedder": "hashing",
            "executor": {"type": "direct", "max_tokens": 16},
        }
    )
    record = tmp_path / "run.jsonl"
    first = agentic("run", "--controller", spec, "--n", "2", "--record", str(record))
    assert first.returncode == 0, first.stderr
    listing = agentic("memory", "ls", str(store))
    assert listing.returncode == 0 and listing.stdout.count("\n") >= 2, listing.stderr
    second = agentic("run", "--controller", spec, "--n", "2", "--seed", "1", "--json",
                     str(tmp_path / "out.json"))  # fmt: skip
    assert second.returncode == 0, second.stderr
    outcomes = json.loads((tmp_path / "out.json").read_text())["outcomes"]
    retrieved = [o["info"]["retrieved"] for o in outcomes]
    assert all(r["positive"] or r["negative"] for r in retrieved)  # the first run's cases
    again = agentic("replay", str(record))
    assert again.returncode != 0 and "memory" in again.stdout + again.stderr
