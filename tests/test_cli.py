"""The `agentic` command, run as a user runs it: a real subprocess on the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

AGENTIC = str(Path(sys.executable).with_name("agentic"))


def agentic(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [AGENTIC, *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd
    )


def test_help_everywhere() -> None:
    for cmd in ([], ["generate"], ["run"], ["replay"], ["trace"], ["trace", "show"]):
        res = agentic(*cmd, "--help")
        assert res.returncode == 0, res.stderr
        assert "Usage" in res.stdout


# files the bad-input cases name, written to the working directory of each
BAD_FILES = {
    "a-dir/": b"",
    "latin1.json": '{"type": "direct", "note": "café"}'.encode("latin-1"),
    "deep.json": b"[" * 1500 + b"]" * 1500,
    "bad-byte.jsonl": b'{"type": "a", "ts": 1, "span_id": "s", "payload": {}}\n\xff\n',
}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--backend", "nope:x"], "unknown backend 'nope'"),
        (["run", "--backend", "no-colon"], "is not SCHEME:SPEC"),
        (["generate", "hi", "--max-tokens", "-1"], "max_tokens"),
        (["run", "--suite", "basic_arithmatic"], "unknown suite 'basic_arithmatic'"),
        (["run", "--n", "0"], "n must be >= 1"),
        (["run", "--config", "novalue"], "KEY=VALUE"),
        (["replay", "missing.jsonl"], "missing.jsonl"),
        (["trace", "show", "missing.jsonl"], "missing.jsonl"),
        (["run", "--controller", "bon", "--reward", "head"], "needs head="),
        (["run", "--controller", "astar", "--astar-cost", "nope"], "cost: Input should be"),
        (["run", "--controller", "bon", "--reward", "head", "--head", "x.pt"], "no saved head"),
        (["run", "--controller", "agent", "--samples", "3"], "--samples does not apply"),
        (["run", "--controller", "pf", "--max-tokens", "9"], "--max-tokens does not apply"),
        (["run", "--controller", "direct", "--temperature", "1"], "--temperature does not"),
        (["run", "--controller", "bon", "--reward", "jduge"], "'jduge' is not a verifier"),
        (["run", "--controller", "bon", "--select", "vote"], "select: Input should be"),
        (["run", "--controller", "sc", "--min-p", "2"], "min_p: Input should be"),
        # each of these printed a traceback once (#19); the files are BAD_FILES, in the cwd
        (["run", "--controller", ""], "--controller is empty"),
        (["run", "--controller", "a-dir"], "is a directory, not a spec file"),
        (["run", "--controller", "latin1.json"], "the spec file is not UTF-8 text"),
        (["run", "--controller", "deep.json"], "the spec is nested too deeply"),
        (["replay", "."], ". is a directory, not a trace file"),
        (["trace", "show", "bad-byte.jsonl"], "bad-byte.jsonl:2: not a valid event: not UTF-8"),
        (["run", "--backend", "openai:http://127.0.0.1:notaport/v1"], "Invalid port: 'notaport'"),
        (["run", "-c", "max_digits=100000"], "max_digits must be between 1 and"),
        (["run", "-c", "max_terms=1e400"], "max_terms must be an integer"),
        (["run", "-c", "max_digits=1e400"], "max_digits must be an integer"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], needle: str, tmp_path: Path) -> None:
    for name, data in BAD_FILES.items():
        if name.endswith("/"):
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_bytes(data)
    res = agentic(*args, cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert needle in " ".join(res.stderr.split()), res.stderr
    assert "Traceback" not in res.stderr


def test_malformed_trace_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "a", "ts": 1, "span_id": "s", "payload": {}}\n{oops\n{"type": "b"}\n')
    res = agentic("trace", "show", str(bad))
    assert res.returncode == 2
    assert "bad.jsonl:2" in " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr


def test_existing_recording_is_never_overwritten(tmp_path: Path) -> None:
    rec = tmp_path / "run.jsonl"
    rec.write_text("precious\n")
    res = agentic("run", "--n", "1", "--record", str(rec))
    assert res.returncode == 2 and "--overwrite" in res.stderr
    assert rec.read_text() == "precious\n"


@pytest.mark.slow
def test_generate_streams_text() -> None:
    res = agentic("generate", "What is 2 + 2?", "--max-tokens", "12")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip()


@pytest.mark.slow
def test_run_record_replay_and_show(tmp_path: Path) -> None:
    rec = tmp_path / "run.jsonl"
    res = agentic(
        "run",
        "--n",
        "5",
        "--max-tokens",
        "32",
        "--record",
        str(rec),
        "--json",
        str(tmp_path / "result.json"),
    )
    assert res.returncode == 0, res.stderr
    assert "accuracy" in res.stdout and "completion tokens" in res.stdout
    assert (tmp_path / "result.json").exists()

    # replay must not load a model: torch/transformers stay unimported
    probe = (
        "import sys\n"
        "from agentic.cli import main\n"
        f"sys.argv = ['agentic', 'replay', {str(rec)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "print('MODEL_LOADED' if 'transformers' in sys.modules else 'NO_MODEL', code)\n"
    )
    rep = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    assert "identical" in rep.stdout and "NO_MODEL 0" in rep.stdout, rep.stdout

    # a recording whose outcome was altered no longer replays identically
    tampered = tmp_path / "tampered.jsonl"
    lines = rec.read_text().splitlines()
    at = next(i for i, ln in enumerate(lines) if '"task.outcome"' in ln)
    event = json.loads(lines[at])
    event["payload"]["outcome"]["output"] += " (edited)"
    lines[at] = json.dumps(event)
    tampered.write_text("\n".join(lines) + "\n")
    res = agentic("replay", str(tampered))
    assert res.returncode == 1 and "differ" in res.stdout, res.stdout

    shown = agentic("trace", "show", str(rec), "--type", "task.outcome")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("basic_arithmetic/0/") == 5


def test_sc_flags_apply_and_are_recorded(tmp_path: Path) -> None:
    rec = tmp_path / "sc.jsonl"
    args = ["--controller", "sc", "--samples", "3", "--temperature", "0.9", "--max-tokens", "12"]
    res = agentic("run", "--n", "2", *args, "--record", str(rec))
    assert res.returncode == 0, res.stderr
    events = [json.loads(ln) for ln in rec.read_text().splitlines()]
    [start] = [e for e in events if e["type"] == "run.start"]
    spec = start["payload"]["config"]["controller"]
    assert (spec["type"], spec["n"], spec["temperature"], spec["max_tokens"]) == ("sc", 3, 0.9, 12)
    calls = [e for e in events if e["type"] == "backend.generate"]
    assert calls and all(c["payload"]["request"]["params"]["n"] == 3 for c in calls)
    outcomes = [e["payload"]["outcome"] for e in events if e["type"] == "task.outcome"]
    assert all(o["info"]["n"] == 3 for o in outcomes)


def test_confidence_weighted_vote_from_the_command_line(tmp_path: Path) -> None:
    rec = tmp_path / "bon.jsonl"
    args = ["--controller", "bon", "--samples", "3", "--reward", "confidence"]
    args += ["--select", "weighted_majority", "--keep", "0.7", "--tokens-per-step", "12"]
    res = agentic("run", "--n", "2", *args, "--record", str(rec))
    assert res.returncode == 0, res.stderr
    events = [json.loads(ln) for ln in rec.read_text().splitlines()]
    spec = next(e for e in events if e["type"] == "run.start")["payload"]["config"]["controller"]
    assert (spec["select"], spec["keep"], spec["reward"]) == (
        "weighted_majority",
        0.7,
        "confidence",
    )
    scores = [e["payload"]["score"] for e in events if e["type"] == "search.score"]
    assert len(scores) == 6 and all(0.0 < s < 1.0 for s in scores)
    # confidence read the samples' own logprobs: no scoring forward, no judge
    assert not any(e["type"] == "backend.score" for e in events)


HEAD = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "head_reward.pt"


def test_search_guided_by_a_trained_head(tmp_path: Path) -> None:
    rec = tmp_path / "head.jsonl"
    args = ["--controller", "pf", "--samples", "2", "--reward", "head", "--head", str(HEAD)]
    res = agentic("run", "--n", "2", "--tokens-per-step", "16", *args, "--record", str(rec))
    assert res.returncode == 0, res.stderr
    events = [json.loads(ln) for ln in rec.read_text().splitlines()]
    scores = [e["payload"]["score"] for e in events if e["type"] == "search.score"]
    assert scores and all(0.0 <= s <= 1.0 for s in scores)
    assert not any(e["type"] == "backend.score" for e in events)  # no judge: the head scored
