"""`agentic plot budget`: accuracy-vs-cost points from recordings, the image and its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentic.cli import app
from agentic.core import ConfigError, JSONLSink, Tracer, emit
from agentic.runtime.plot import budget_points, plot_budget

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def spec(type_: str, **kw: Any) -> dict[str, Any]:
    """A controller as `agentic run` recorded it before each type had its own spec: a flat dump
    with every type's fields (newer recordings hold only the type's own)."""
    base: dict[str, Any] = {
        "type": type_,
        "max_tokens": 64,
        "samples": 8,
        "width": 2,
        "k": 4,
        "tokens_per_step": 48,
        "max_steps": 4,
        "temperature": 0.7,
        "reward": "judge",
        "aggregation": "last",
        "seed": 0,
    }
    return {**base, **kw}


def record(
    path: Path,
    controller: dict[str, Any],
    outcomes: list[tuple[float | None, int, int, float]],
    *,
    backend: str = "embedded:smollm2",
    suite: str = "basic_arithmetic",
    resume: list[tuple[float | None, int, int, float]] | None = None,
) -> Path:
    """A recording: run.start, then one task.outcome per (score, prompt, completion, seconds);
    `resume` appends a run.resume and more outcomes, as `agentic run --resume` does."""

    def outcome(i: int, o: tuple[float | None, int, int, float]) -> None:
        score, prompt, completion, seconds = o
        emit(
            "task.outcome",
            outcome={
                "task_id": f"t{i}",
                "output": "42",
                "score": score,
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "model_calls": 1,
                    "reward_calls": 0,
                    "seconds": seconds,
                    "cost_usd": 0.0,
                },
                "trace_id": None,
                "error": None,
            },
        )

    sink = JSONLSink(path)
    with Tracer([sink]).activate():
        emit(
            "run.start",
            suite={"name": suite, "n": len(outcomes), "seed": 0, "config": {}},
            tasks=len(outcomes),
            config={
                "backend": backend,
                "backend_name": backend.split("#")[-1].split(":")[-1],
                "controller": controller,
                "concurrency": 4,
            },
        )
        for i, o in enumerate(outcomes):
            outcome(i, o)
        if resume is not None:
            emit("run.resume", tasks=len(outcomes) + len(resume), done=len(outcomes))
            for j, o in enumerate(resume, start=len(outcomes)):
                outcome(j, o)
        emit("run.end", accuracy=0.0, usage={}, not_run=0, stopped=None)
    sink.close()
    return path


@pytest.fixture
def recs(tmp_path: Path) -> list[Path]:
    return [
        record(tmp_path / "direct.jsonl", spec("direct"), [(1.0, 10, 20, 1.0), (0.0, 10, 40, 2.0)]),
        record(tmp_path / "bon2.jsonl", spec("bon", samples=2), [(1.0, 20, 100, 3.0)] * 2),
        record(
            tmp_path / "bon8.jsonl",
            spec("bon", samples=8),
            [(1.0, 80, 400, 5.0), (1.0, 80, 400, 5.0), (0.0, 80, 700, 8.0), (1.0, 80, 100, 2.0)],
        ),
        record(
            tmp_path / "beam.jsonl",
            spec("beam", samples=4, width=2),
            [(0.5, 30, 200, 4.0), (0.0, 30, 300, 6.0)],
        ),
        record(tmp_path / "astar.jsonl", spec("astar", k=3), [(1.0, 50, 250, 7.0)]),
    ]


def by_file(points: list[Any]) -> dict[str, Any]:
    return {Path(p.file).stem: p for p in points}


def test_points_means_labels_and_sizes(recs: list[Path]) -> None:
    pts = budget_points(recs)
    assert len(pts) == 5
    p = by_file(pts)
    assert (p["direct"].x, p["direct"].accuracy, p["direct"].tasks) == (30.0, 0.5, 2)
    assert (p["bon2"].x, p["bon2"].accuracy, p["bon2"].tasks) == (100.0, 1.0, 2)
    assert (p["bon8"].x, p["bon8"].accuracy, p["bon8"].tasks) == (400.0, 0.75, 4)
    assert (p["beam"].x, p["beam"].accuracy) == (250.0, 0.25)
    assert (p["astar"].x, p["astar"].accuracy) == (250.0, 1.0)
    # one line per algorithm; each point annotated with its size
    assert {k: v.label for k, v in p.items()} == {
        "direct": "direct",
        "bon2": "bon",
        "bon8": "bon",
        "beam": "beam",
        "astar": "astar",
    }
    assert {k: v.note for k, v in p.items()} == {
        "direct": "max_tokens=64",
        "bon2": "N=2",
        "bon8": "N=8",
        "beam": "N=4 w=2",
        "astar": "k=3",
    }
    assert p["bon8"].controller == spec("bon", samples=8)
    assert p["bon8"].backend == "smollm2" and p["bon8"].suite == "basic_arithmetic"
    # sorted by label, then x: a line's points come in order of cost
    assert [Path(q.file).stem for q in pts] == ["astar", "beam", "bon2", "bon8", "direct"]


def test_other_axes(recs: list[Path]) -> None:
    total = by_file(budget_points(recs, x="total_tokens"))
    assert total["direct"].x == 40.0 and total["bon8"].x == 480.0
    secs = by_file(budget_points(recs, x="seconds"))
    assert secs["direct"].x == 1.5 and secs["bon8"].x == 5.0


def test_settings_that_differ_split_a_type_into_named_lines(tmp_path: Path) -> None:
    recs = [
        record(tmp_path / "j2.jsonl", spec("bon", samples=2), [(0.0, 1, 10, 1.0)]),
        record(tmp_path / "j8.jsonl", spec("bon", samples=8, seed=3), [(1.0, 1, 40, 1.0)]),
        record(
            tmp_path / "c4.jsonl", spec("bon", samples=4, reward="checker"), [(1.0, 1, 20, 1.0)]
        ),
        # max_tokens is not a setting of bon: a different value there does not split its line
        record(tmp_path / "j4.jsonl", spec("bon", samples=4, max_tokens=9), [(1.0, 1, 20, 1.0)]),
    ]
    p = by_file(budget_points(recs))
    assert p["j2"].label == p["j8"].label == p["j4"].label == "bon reward=judge"
    assert p["c4"].label == "bon reward=checker"


def test_several_backends_or_suites_name_them(tmp_path: Path) -> None:
    recs = [
        record(tmp_path / "a.jsonl", spec("bon", samples=2), [(1.0, 1, 10, 1.0)]),
        record(
            tmp_path / "b.jsonl",
            spec("bon", samples=2),
            [(1.0, 1, 10, 1.0)],
            backend="openai:http://h/v1#qwen",
            suite="chain_sum",
        ),
    ]
    p = by_file(budget_points(recs))
    assert p["a"].label == "bon @ smollm2 [basic_arithmetic]"
    assert p["b"].label == "bon @ qwen [chain_sum]"


def test_resumed_run_and_old_controller_format(tmp_path: Path) -> None:
    resumed = record(
        tmp_path / "resumed.jsonl",
        spec("pf", samples=16),
        [(1.0, 1, 10, 1.0)],
        resume=[(0.0, 1, 30, 1.0), (None, 1, 50, 1.0)],
    )
    old = record(
        tmp_path / "old.jsonl",
        {"type": "Direct", "params": {"max_tokens": 32, "temperature": 0.0}},
        [(1.0, 1, 8, 1.0), (1.0, 1, 12, 1.0)],
    )
    p = by_file(budget_points([resumed, old]))
    # three tasks over both parts; the unscored one counts for cost, not accuracy
    assert (p["resumed"].x, p["resumed"].accuracy, p["resumed"].tasks) == (30.0, 0.5, 3)
    assert (p["resumed"].label, p["resumed"].note) == ("pf", "N=16")
    assert (p["old"].label, p["old"].note, p["old"].x) == ("direct", "max_tokens=32", 10.0)


def test_plot_writes_png_and_json(recs: list[Path], tmp_path: Path) -> None:
    pts = budget_points(recs)
    image = plot_budget(pts, tmp_path / "out" / "curve.png", "completion_tokens", "demo")
    assert image == tmp_path / "out" / "curve.png"
    data = image.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    saved = json.loads((tmp_path / "out" / "curve.json").read_text())
    assert saved["x"] == "completion_tokens" and saved["title"] == "demo"
    assert [q["file"] for q in saved["points"]] == [q.file for q in pts]
    assert saved["points"][3]["accuracy"] == 0.75 and saved["points"][3]["note"] == "N=8"


def test_cli_plot_budget(recs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cli.png"
    res = CliRunner().invoke(
        app, ["plot", "budget", *map(str, recs), "--out", str(out), "--x", "total_tokens"]
    )
    assert res.exit_code == 0, (res.output, res.exception)
    assert out.read_bytes().startswith(PNG_MAGIC)
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["x"] == "total_tokens" and len(saved["points"]) == 5


def test_cli_errors(recs: list[Path], tmp_path: Path) -> None:
    not_a_run = tmp_path / "trace_only.jsonl"
    not_a_run.write_text('{"type": "backend.generate", "ts": 1, "span_id": "s", "payload": {}}\n')
    empty_run = record(tmp_path / "no_outcomes.jsonl", spec("bon"), [])
    out = str(tmp_path / "x.png")
    cases = [
        ([str(recs[0]), str(not_a_run)], "trace_only.jsonl has no run.start"),
        ([str(empty_run)], "no_outcomes.jsonl has no task.outcome"),
        ([str(tmp_path / "missing.jsonl")], "missing.jsonl"),
        ([], "no recordings given"),
        ([str(recs[0]), "--x", "tokens"], "unknown --x 'tokens'"),
        ([str(recs[0]), "--out", str(tmp_path / "x.json")], "x.json"),
    ]
    for args, needle in cases:
        res = CliRunner().invoke(app, ["plot", "budget", "--out", out, *args])
        assert res.exit_code != 0, args
        assert isinstance(res.exception, ConfigError | FileNotFoundError), res.exception
        assert needle in str(res.exception), (needle, res.exception)
    assert not Path(out).exists()


def test_command_error_is_one_line(tmp_path: Path) -> None:
    """Run as a user runs it: `agentic plot budget` prints one line and exits 2."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "run.end", "ts": 1, "span_id": "s", "payload": {}}\n')
    code = "import sys; from agentic.cli import main; sys.argv[0] = 'agentic'; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "plot", "budget", str(bad), "--out", str(tmp_path / "o.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "bad.jsonl has no run.start" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr


def test_importing_agentic_or_plot_does_not_load_matplotlib() -> None:
    code = (
        "import sys, agentic, agentic.runtime.plot, agentic.cli; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
