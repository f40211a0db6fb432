"""The runnable examples in examples/ stay runnable.

Each example takes 10-80 s on the real model on a busy 2-core machine, several minutes for all
ten: too much for the CI budget. So the tests run three of them as real programs in
subprocesses: the composed pipeline (PSR over an A2FM router over Direct, self-consistency and
a ToolAgent, from examples/pipeline.yaml), the tool agent and the playbook (MiniLM, no language
model). Every example is checked for its documented run command, and the pipeline spec for
still validating and building.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentic.agents import ToolAgent
from agentic.runtime.suites import load_suite
from agentic.specs.registry import BuildContext, parse_controller_spec
from backends.base import Capabilities
from backends.testing import ScriptedBackend
from controllers import A2FMRouter, Direct, ProgressiveSelfReflection, SelfConsistency

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = [
    "structured_output",
    "tool_agent",
    "self_reflection",
    "cyberv",
    "router",
    "entropy_switch",
    "pipeline",
    "playbook",
    "ace",
    "case_memory",
    "steering",
    "routing",
    "void_trace",
    "verifiers",
]


def run_example(name: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_example_documents_how_to_run_it(name: str) -> None:
    source = (EXAMPLES / f"{name}.py").read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source))
    assert doc is not None, f"examples/{name}.py has no module docstring"
    assert f".venv/bin/python examples/{name}.py" in doc
    assert "asyncio.run(main())" in source


def test_the_pipeline_spec_validates_and_builds_the_nested_controllers() -> None:
    backend = ScriptedBackend(lambda prefix, j: ("4", True))
    backend.capabilities = Capabilities(prefix=True, score=True)  # built only, never called
    spec = parse_controller_spec(str(EXAMPLES / "pipeline.yaml"))
    psr = BuildContext(backend, load_suite("basic_arithmetic", n=1)).build(spec)
    assert isinstance(psr, ProgressiveSelfReflection) and psr.max_rounds == 1
    router = psr.inner
    assert isinstance(router, A2FMRouter)
    assert isinstance(router.modes["instant"], Direct)
    assert isinstance(router.modes["reasoning"], SelfConsistency)
    agent = router.modes["agentic"]
    assert isinstance(agent, ToolAgent) and list(agent.tools) == ["calculator"]
    doc = ast.get_docstring(ast.parse((EXAMPLES / "pipeline.py").read_text(encoding="utf-8")))
    assert doc is not None and "agentic run --controller examples/pipeline.yaml --n 3" in doc


@pytest.mark.slow
def test_the_pipeline_example_runs_every_layer() -> None:
    out = run_example("pipeline")
    lines = out.splitlines()
    assert sum(line.startswith("task task_id=basic_arithmetic/0/") for line in lines) == 3
    for once_per_task in ("psr.rounds rounds=1", "router.decision mode=", "psr.done"):
        assert sum(once_per_task in line for line in lines) == 3, (once_per_task, out)
    assert sum("psr.reflection p=" in line for line in lines) >= 3, out  # each answer judged
    assert sum(line.strip().startswith("task.outcome score=") for line in lines) == 3
    assert any(line.startswith("accuracy ") and "tokens of 20000" in line for line in lines)


@pytest.mark.slow
def test_the_tool_agent_example_uses_each_tool_and_reads_its_result() -> None:
    out = run_example("tool_agent")
    # the tools' results are exact, so they show the model called each one with right arguments
    assert 'calculator({"expression": "4821 * 37"})' in out
    assert "observation: '178377'" in out
    assert "python(" in out and "observation: '12'" in out
    assert 'fahrenheit({"celsius": 37})' in out and "observation: '98.6'" in out
    assert out.count("\nA: ") == 3


def test_the_playbook_example_merges_refuses_and_logs() -> None:
    out = run_example("playbook")  # MiniLM only, no language model: about 10 s
    assert "paraphrase: deduplicated into str-00001" in out
    assert "refused: op 1 (TAG): no bullet 'nope'" in out
    assert "[str-00001] (helpful 1, harmful 0) Multiply first; estimate." in out
    log = [line.split()[1] for line in out.split("operation log:")[1].splitlines() if line.strip()]
    assert log == ["added", "added", "deduplicated", "added", "tagged", "tagged", "merged"]


@pytest.mark.slow
def test_void_trace_example_prints_bars_and_writes_a_png(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "void_trace.py")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "quietest layers on the prompt" in proc.stdout and "█" in proc.stdout
    assert (tmp_path / "void_trace.png").read_bytes()[:4] == b"\x89PNG"
