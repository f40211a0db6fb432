"""`agentic run --resume`: finish a run killed mid-way, as a user does it: real subprocesses on
the real model. Recordings are read back line by line, so a resume must leave valid JSONL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentic.core import Event, Usage, read_events

pytestmark = pytest.mark.slow

AGENTIC = str(Path(sys.executable).with_name("agentic"))
SUITE = "basic_arithmetic"
# every run shares these, so a resume matches the recording it continues
COMMON = ["--suite", SUITE, "--backend", "embedded:smollm2", "--concurrency", "1"]
COMMON += ["--max-tokens", "16"]


def _env() -> dict[str, str]:
    env = dict(os.environ)  # AGENTIC_CACHE_DIR unchanged: the converted model is cached there
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def agentic(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENTIC, *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _outcome_ids(path: Path) -> list[str]:
    return [e.payload["outcome"]["task_id"] for e in read_events(path) if e.type == "task.outcome"]


def _parse_every_line(path: Path) -> list[Event]:
    """Strict: every line is a whole event and the file ends with a newline (no torn tail)."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{path} ends with a torn line: {text[-80:]!r}"
    return [Event.model_validate_json(line) for line in text.split("\n")[:-1]]


def _suite_ids(n: int, seed: int = 0) -> list[str]:
    from agentic.runtime.suites import load_suite

    return [t.id for t in load_suite(SUITE, n=n, seed=seed).tasks]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete recording of a 3-task run (copy it before changing it)."""
    cwd = tmp_path_factory.mktemp("recording")
    res = agentic("run", *COMMON, "--n", "3", "--record", "r.jsonl", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(_outcome_ids(cwd / "r.jsonl")) == 3
    return cwd / "r.jsonl"


def test_resume_after_sigkill_finishes_only_missing_tasks(tmp_path: Path) -> None:
    n = 12
    rec = tmp_path / "r.jsonl"
    args = ["run", *COMMON, "--n", str(n)]
    with (tmp_path / "first.log").open("w") as log:
        proc = subprocess.Popen(
            [AGENTIC, *args, "--record", str(rec)],
            cwd=tmp_path,
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    log.flush()
                    pytest.fail(
                        f"the run exited (rc {proc.returncode}) before it could be killed; "
                        f"make it longer (--n) so the kill lands mid-run:\n"
                        + (tmp_path / "first.log").read_text()
                    )
                if rec.exists() and len(_outcome_ids(rec)) >= 3:
                    break
                if time.monotonic() > deadline:
                    pytest.fail("no 3 task.outcome events within 120 s")
                time.sleep(0.1)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill landed"
    k = len(_outcome_ids(rec))
    assert 0 < k < n, f"the kill left {k} of {n} outcomes: expected a partial run"

    res = agentic(*args, "--resume", str(rec), "--json", "out.json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{n} done, 0 not run" in res.stdout, res.stdout

    from agentic.runtime.runner import RunResult

    result = RunResult.model_validate_json((tmp_path / "out.json").read_text())
    ids = [o.task_id for o in result.outcomes]
    assert len(ids) == n and len(set(ids)) == n
    assert sorted(ids) == sorted(_suite_ids(n))
    assert result.not_run == []
    total = Usage.total(o.usage for o in result.outcomes)
    assert result.usage == total
    assert result.usage.model_calls == n  # Direct: one model call per task, none repeated

    events = _parse_every_line(rec)
    types = [e.type for e in events]
    recorded = [e.payload["outcome"]["task_id"] for e in events if e.type == "task.outcome"]
    assert len(recorded) == n and sorted(recorded) == sorted(_suite_ids(n))
    assert types.count("run.start") == 1
    assert types.count("run.resume") == 1
    at = types.index("run.resume")
    assert events[at].payload["done"] == k
    assert events[at].payload["tasks"] == n
    assert types[at + 1 :].count("backend.generate") == n - k
    assert types[at + 1 :].count("task.outcome") == n - k
    assert types[-1] == "run.end"


def test_resume_drops_a_torn_last_line(tmp_path: Path, recording: Path) -> None:
    lines = recording.read_text(encoding="utf-8").split("\n")[:-1]
    last = max(i for i, line in enumerate(lines) if '"type":"task.outcome"' in line)
    kept = lines[:last]
    rec = tmp_path / "r.jsonl"
    # the tail a kill mid-write leaves: part of the next event, no newline
    rec.write_text("".join(line + "\n" for line in kept) + lines[last][:40], encoding="utf-8")
    assert len(_outcome_ids(rec)) == 2

    res = agentic("run", *COMMON, "--n", "3", "--resume", "r.jsonl", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 done, 0 not run" in res.stdout, res.stdout

    events = _parse_every_line(rec)  # the torn fragment is gone
    ids = [e.payload["outcome"]["task_id"] for e in events if e.type == "task.outcome"]
    assert sorted(ids) == sorted(_suite_ids(3))
    assert [e.payload["done"] for e in events if e.type == "run.resume"] == [2]


@pytest.mark.parametrize("torn", [False, True])
def test_resume_refuses_a_different_run(tmp_path: Path, recording: Path, torn: bool) -> None:
    rec = tmp_path / "r.jsonl"
    shutil.copy(recording, rec)
    if torn:  # a refused resume must not even drop the torn line
        with rec.open("a") as f:
            f.write('{"type": "task.outc')
    before = rec.read_bytes()

    res = agentic("run", *COMMON, "--n", "3", "--seed", "1", "--resume", str(rec), cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    output = res.stdout + res.stderr
    assert "Traceback" not in output
    said = [line for line in output.splitlines() if line.strip()]
    assert len(said) == 1, output
    assert "suite.seed" in said[0]
    assert rec.read_bytes() == before


def test_resume_and_record_conflict(tmp_path: Path, recording: Path) -> None:
    rec = tmp_path / "r.jsonl"
    shutil.copy(recording, rec)
    before = rec.read_bytes()

    res = agentic(
        "run", *COMMON, "--n", "3", "--record", "other.jsonl", "--resume", "r.jsonl", cwd=tmp_path
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--resume" in res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert not (tmp_path / "other.jsonl").exists()
    assert rec.read_bytes() == before
