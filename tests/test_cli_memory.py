"""`agentic memory ls|show|rm|export|import`, through the CLI entry point: in-process via
`agentic.cli.main` for the mechanics, one real subprocess, and a bank embedded by the real
MiniLM that still retrieves by meaning after an export and import."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from minilm import minilm

from agentic.cli import main
from memory import Case, CaseBank, HashingEmbedder

AGENTIC = str(Path(sys.executable).with_name("agentic"))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `agentic ARGS` through its entry point; (exit code, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["agentic", *args]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def make_store(path: Path, bank: str = "default") -> list[Case]:
    cases = [
        Case(id="c-add", task="What is 2 + 3?", plan="1. add\n2. answer", reward=1.0, label=True),
        Case(id="c-mul", task="What is 6 * 7?", plan="guess", reward=0.0, label=False),
        Case(
            id="c-sub",
            task="What is 9 - 4?",
            plan="subtract",
            trajectory="answer: 5",
            reward=0.9,
            label=True,
            metadata={"source": "test"},
        ),
    ]

    async def fill() -> None:
        b = CaseBank.open(path, HashingEmbedder(), name=bank)
        for c in cases:
            await b.add(c)
        b.close()

    asyncio.run(fill())
    return cases


def test_ls_show_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "m.db"
    make_store(store)
    code, out, _ = cli(capsys, "memory", "ls", str(store))
    assert code == 0 and "3 case(s)" in out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("│ c-")] == [
        "c-add",
        "c-mul",
        "c-sub",
    ]
    assert "What is 6 * 7?" in out and "failure" in out and "0.900" in out
    code, out, _ = cli(capsys, "memory", "ls", str(store), "--label", "failure")
    assert code == 0 and "c-mul" in out and "c-add" not in out
    code, out, _ = cli(capsys, "memory", "show", str(store), "c-sub")
    assert code == 0 and "answer: 5" in out and "'source': 'test'" in out and "0.9" in out
    code, out, _ = cli(capsys, "memory", "rm", str(store), "c-add", "c-mul")
    assert code == 0 and "deleted 2 case(s)" in out
    code, out, _ = cli(capsys, "memory", "ls", str(store))
    assert "1 case(s)" in out and "c-add" not in out and "c-sub" in out


def test_export_and_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, copy, path = tmp_path / "m.db", tmp_path / "copy.db", tmp_path / "cases.json"
    cases = make_store(store, bank="arith")
    code, out, _ = cli(capsys, "memory", "export", str(store), str(path), "--bank", "arith")
    assert code == 0 and "exported 3 case(s)" in out
    code, out, _ = cli(capsys, "memory", "import", str(copy), str(path), "--bank", "arith")
    assert code == 0 and "imported 3 of 3" in out
    code, out, _ = cli(capsys, "memory", "import", str(copy), str(path), "--bank", "arith")
    assert code == 0 and "imported 0 of 3" in out and "3 already there" in out

    async def read_back() -> list[Case]:
        b = CaseBank.open(copy, HashingEmbedder(), name="arith")
        try:
            hits = await b.retrieve("What is 6 * 7?", k=1)
            assert hits[0].case.id == "c-mul"  # the imported vectors work for retrieval
            return await b.list()
        finally:
            b.close()

    assert [c.model_dump() for c in asyncio.run(read_back())] == [c.model_dump() for c in cases]
    # an existing export is never overwritten unless asked
    code, _, err = cli(capsys, "memory", "export", str(store), str(path), "--bank", "arith")
    assert code == 2 and "--overwrite" in err
    code, _, _ = cli(
        capsys, "memory", "export", str(store), str(path), "--bank", "arith", "--overwrite"
    )
    assert code == 0


def test_bad_input_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "m.db"
    make_store(store)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"definitely not sqlite\n" * 50)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"format": "agentic.case_bank", "cases": "nope"}')
    cases = [
        (["ls", str(garbage)], "not an SQLite file"),
        (["ls", str(tmp_path / "missing.db")], "no memory store at"),
        (["ls", str(store), "--bank", "nope"], "has no case bank 'nope'; it has 'default'"),
        (["ls", str(store), "--limit", "0"], "--limit must be >= 1"),
        (["show", str(store), "c-zzz"], "no case with id 'c-zzz'"),
        (["rm", str(store), "c-add", "c-zzz"], "no case with id 'c-zzz'"),
        (["import", str(tmp_path / "new.db"), str(bad_json)], "is not a case-bank export"),
        (["import", str(store), str(tmp_path / "none.json")], "no case export at"),
    ]
    before = garbage.read_bytes()
    for args, needle in cases:
        code, out, err = cli(capsys, "memory", *args)
        assert code == 2, (args, out, err)
        assert needle in err and "Traceback" not in err, (args, err)
    assert garbage.read_bytes() == before
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "new.db").exists()
    # the failed rm deleted nothing
    code, out, _ = cli(capsys, "memory", "ls", str(store))
    assert "3 case(s)" in out


def test_the_installed_command_reports_a_bad_store_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "notes.db"
    bad.write_text("just notes\n")
    res = subprocess.run(
        [AGENTIC, "memory", "ls", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 2
    assert "not an agentic memory store" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert bad.read_text() == "just notes\n"


@pytest.mark.slow
def test_minilm_bank_survives_export_and_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, copy, path = tmp_path / "m.db", tmp_path / "copy.db", tmp_path / "cases.json"
    tasks = {
        "Book a train from Berlin to Munich": "compare times, buy ticket",
        "Fix a flat bicycle tyre": "find the hole, patch it",
        "Write a birthday message for my aunt": "warm, short, personal",
    }

    async def fill() -> None:
        b = CaseBank.open(store, minilm())
        for task, plan in tasks.items():
            await b.add(Case(task=task, plan=plan, reward=1.0, label=True))
        b.close()

    asyncio.run(fill())
    assert cli(capsys, "memory", "export", str(store), str(path))[0] == 0
    assert cli(capsys, "memory", "import", str(copy), str(path))[0] == 0

    async def ask(query: str) -> str:
        b = CaseBank.open(copy, minilm())  # the same embedder: accepted, nothing re-embedded
        try:
            [hit] = await b.retrieve(query, k=1)
            return hit.case.plan
        finally:
            b.close()

    assert asyncio.run(ask("my bike has a puncture")) == "find the hole, patch it"
    assert asyncio.run(ask("greetings card text for a relative")) == "warm, short, personal"
