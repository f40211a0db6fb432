"""The `agentic` command, run as a user runs it: a real subprocess on the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from servers import stub_server

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
        # the default reward, the value model, from a folder that does not hold one
        (
            ["run", "--controller", '{"type": "pf", "value_model": "nothing-here"}'],
            "nothing-here; build it with `python benchmarks/value_labels.py",
        ),
        (["run", "--controller", "agent", "--samples", "3"], "--samples does not apply"),
        (["run", "--controller", "pf", "--max-tokens", "9"], "--max-tokens does not apply"),
        (["run", "--controller", "direct", "--temperature", "1"], "--temperature does not"),
        (["run", "--controller", "bon", "--reward", "jduge"], "'jduge' is not a verifier"),
        (["run", "--controller", "bon", "--select", "vote"], "select: Input should be"),
        (["run", "--controller", "sc", "--min-p", "2"], "min_p: Input should be"),
        # one controller registry: unknown types and fields are named, with what is known
        (["run", "--controller", "foo"], "unknown controller type 'foo'; known: ace, agent"),
        (
            ["run", "--controller", '{"type": "pf", "widht": 2}'],
            "controller 'pf': unknown field 'widht'",
        ),
        (
            ["run", "--controller", '{"type": "psr", "inner": {"type": "sc", "m": 1}}'],
            "controller 'sc' at inner: unknown field 'm'",
        ),
        (["run", "--controller", "beam", "--k", "3"], "--k does not apply to --controller beam"),
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


# ---- long jobs and resume, against a scripted server on 127.0.0.1: no model is loaded ---------

N_STUB = 8
RIGHT = 3  # the stub answers the first RIGHT tasks correctly, the rest wrongly


def _scripted_answers(delay: float) -> Callable[[str, bytes], bytes]:
    """A server's POST answer: right for the first RIGHT tasks of the suite, wrong for the rest,
    each after `delay` seconds (so summed request latency exceeds the wall clock)."""
    from agentic.runtime.suites import load_suite

    tasks = load_suite("basic_arithmetic", n=N_STUB, seed=0).tasks
    answers = {t.input: str(t.answer) if i < RIGHT else "wrong" for i, t in enumerate(tasks)}

    def answer(path: str, body: bytes) -> bytes:
        time.sleep(delay)
        request = json.loads(body)
        asked = request["messages"][-1]["content"] if "messages" in request else request["prompt"]
        text = next((a for q, a in answers.items() if q in asked), "wrong")
        choice = {"index": 0, "text": text, "message": {"content": text}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 10, "completion_tokens": 2}
        return json.dumps({"choices": [choice], "usage": usage}).encode()

    return answer


def test_json_and_table_say_accuracy_solved_and_wall_clock(tmp_path: Path) -> None:
    with stub_server(post=_scripted_answers(delay=0.4)) as stub:
        res = agentic(
            "run", "--backend", f"openai:{stub.url}#m", "--n", str(N_STUB), "--concurrency", "4",
            "--json", "out.json", "--progress-every", "0", cwd=tmp_path,
        )  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    scores = [o["score"] for o in data["outcomes"]]
    assert sorted(scores) == [0.0] * (N_STUB - RIGHT) + [1.0] * RIGHT
    assert data["solved"] == RIGHT
    assert data["accuracy"] == data["mean_score"] == RIGHT / N_STUB
    # 8 requests of 0.4 s, 4 at a time: ~0.8 s of wall clock against ~3.2 s of summed latency
    assert data["usage"]["seconds"] >= N_STUB * 0.4
    assert 0 < data["wall_seconds"] < data["usage"]["seconds"]
    rows = {
        cells[1].strip(): cells[2].strip()
        for cells in (line.split("│") for line in res.stdout.splitlines())
        if len(cells) == 4
    }
    assert rows["accuracy (mean score)"] == "37.5%", res.stdout
    assert rows["solved (score 1.0)"] == f"{RIGHT} of {N_STUB}"
    assert rows["model calls (generate + score)"] == str(N_STUB)
    assert rows["reward calls (verifier)"] == "0"
    assert 0 < float(rows["wall seconds"]) < float(rows["request seconds (summed)"])

    # stderr is a pipe here: plain progress lines, one per task with --progress-every 0
    lines = [line for line in res.stderr.splitlines() if line.startswith("basic_arithmetic: ")]
    assert len(lines) == N_STUB, res.stderr
    assert lines[0].startswith("basic_arithmetic: 1/8 done, accuracy ")
    assert lines[-1].startswith(f"basic_arithmetic: 8/8 done, accuracy 37.5% ({RIGHT} solved), ")
    assert f"{N_STUB * 12} tokens, elapsed 0:00:0" in lines[-1]
    assert lines[-1].endswith("ETA 0:00:00")


def test_resume_accepts_another_concurrency(tmp_path: Path) -> None:
    """Concurrency is deliberately not part of a run's identity (outcomes do not depend on it)."""
    with stub_server(post=_scripted_answers(delay=0.0)) as stub:
        backend = ["--backend", f"openai:{stub.url}#m", "--n", "4"]
        first = agentic("run", *backend, "--concurrency", "4", "--record", "r.jsonl", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        rec = tmp_path / "r.jsonl"
        lines = rec.read_text().splitlines(keepends=True)
        outcomes = [i for i, line in enumerate(lines) if '"type":"task.outcome"' in line]
        rec.write_text("".join(lines[: outcomes[2]]))  # as if killed after two outcomes
        posts = len(stub.posts)
        res = agentic("run", *backend, "--concurrency", "1", "--resume", "r.jsonl", cwd=tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "4 done, 0 not run" in res.stdout, res.stdout
        assert len(stub.posts) - posts == 2  # only the two missing tasks were solved


async def test_the_live_bar_shows_tokens_and_eta() -> None:
    import io

    from rich.console import Console

    from agentic.cli.progress import solve_with_progress
    from agentic.core import Budget
    from agentic.runtime.suites import load_suite
    from backends.testing import ScriptedBackend
    from controllers import Direct

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, color_system=None, width=200)
    suite = load_suite("basic_arithmetic", n=4, seed=0)
    backend = ScriptedBackend(lambda prefix, j: ("12", True))
    result = await solve_with_progress(suite, Direct(backend), 2, Budget(), {}, None, terminal)
    tokens = result.usage.total_tokens
    assert tokens > 0
    assert f"4/4 {tokens} tok" in screen.getvalue(), screen.getvalue()
    assert "ETA 0:00:00" in screen.getvalue()


def test_prices_turn_usage_into_dollars_and_a_dollar_budget_stops_the_run(
    tmp_path: Path,
) -> None:
    with stub_server(post=_scripted_answers(delay=0.0)) as stub:
        uri = f"openai:{stub.url}#m"
        # each answer is 10 prompt + 2 completion tokens: 10 * 0.1 + 2 * 1.0 = 3 dollars
        (tmp_path / "prices.yaml").write_text(json.dumps({uri: {"prompt": 1e5, "completion": 1e6}}))
        res = agentic(
            "run", "--backend", uri, "--n", "4", "--concurrency", "1", "--prices", "prices.yaml",
            "--budget-usd", "7", "--json", "out.json", cwd=tmp_path,
        )  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["usage"]["cost_usd"] == pytest.approx(9.0)  # checked before each call: 3 ran
    assert len(data["outcomes"]) == 3 and data["not_run"]
    refused = agentic("run", "--budget-usd", "1", "--n", "1")
    assert refused.returncode == 2 and "--budget-usd needs --prices" in refused.stderr
