"""`CaseBank`: retrieval, label filter, deletes, persistence and snapshots, other processes'
writes (concurrent appends, a kill -9 mid-append), refused files, export/import, and the real
MiniLM embedder finding a semantically related case."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from minilm import minilm

from agentic.core import ConfigError, StoreError
from memory import Case, CaseBank, HashingEmbedder
from memory.case_index import CaseIndex

REPO = Path(__file__).resolve().parents[1]

TASKS = [
    ("Sort a list of numbers in ascending order", "call sorted() on the list", True),
    ("Reverse the characters of a string", "slice it with [::-1]", True),
    ("Compute the factorial of a number", "multiply 1..n in a loop", True),
    ("Translate a French sentence into English", "word-by-word lookup", False),
    ("Count the words in a sentence", "split on spaces and count", False),
]


class CountingEmbedder:
    """Wraps an embedder and counts its calls and texts."""

    def __init__(self, inner: HashingEmbedder) -> None:
        self.inner, self.name, self.calls, self.texts = inner, inner.name, 0, 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        return await self.inner.embed(texts)


async def _filled(path: Path | str, embedder: object | None = None) -> CaseBank:
    bank = CaseBank.open(path, embedder or HashingEmbedder())  # type: ignore[arg-type]
    for task, plan, ok in TASKS:
        await bank.add(Case(task=task, plan=plan, reward=float(ok), label=ok))
    return bank


async def test_add_and_retrieve_finds_the_nearest_case(tmp_path: Path) -> None:
    bank = await _filled(tmp_path / "m.db")
    hits = await bank.retrieve("reverse the characters of this string please", k=2)
    assert len(hits) == 2
    assert hits[0].case.task == "Reverse the characters of a string"
    assert hits[0].score > hits[1].score
    assert await bank.count() == 5 and await bank.count(label=False) == 2
    bank.close()


async def test_label_filter_gives_only_that_label(tmp_path: Path) -> None:
    bank = await _filled(tmp_path / "m.db")
    query = "count the words of a sentence"
    assert (await bank.retrieve(query, k=1))[0].case.label is False
    good = await bank.retrieve(query, k=5, label=True)
    bad = await bank.retrieve(query, k=5, label=False)
    assert {h.case.label for h in good} == {True} and len(good) == 3
    assert {h.case.label for h in bad} == {False} and len(bad) == 2
    assert bad[0].case.task == "Count the words in a sentence"
    bank.close()


async def test_delete_removes_from_retrieval(tmp_path: Path) -> None:
    bank = await _filled(tmp_path / "m.db")
    [top] = await bank.retrieve("Reverse the characters of a string", k=1)
    assert await bank.delete([top.case.id, "no-such-id"]) == 1
    hits = await bank.retrieve("Reverse the characters of a string", k=5)
    assert top.case.id not in {h.case.id for h in hits} and len(hits) == 4
    assert await bank.get(top.case.id) is None
    await bank.verify()
    bank.close()


async def test_persists_across_reopen_and_uses_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.db"
    bank = await _filled(path)
    before = [c.model_dump() for c in await bank.list()]
    bank.close()  # writes the index snapshot
    rebuilds: list[int] = []
    real = CaseIndex.rebuild
    monkeypatch.setattr(CaseIndex, "rebuild", lambda self: rebuilds.append(1) or real(self))
    again = CaseBank.open(path, HashingEmbedder())
    assert rebuilds == []  # loaded from the snapshot, not rebuilt
    assert [c.model_dump() for c in await again.list()] == before
    assert (await again.retrieve("factorial of a number", k=1))[0].case.plan.startswith("mult")
    # a write after the snapshot is replayed from the log on the next open
    extra = await again.add(
        Case(task="Add two fractions", plan="common denominator", reward=1, label=True)
    )
    again.conn.execute("DELETE FROM case_snapshots")  # simulate a crash: no fresh snapshot
    again.conn.close()
    third = CaseBank.open(path, HashingEmbedder())
    assert rebuilds == [1]
    assert (await third.retrieve("add two fractions", k=1))[0].case.id == extra.id
    await third.verify()
    third.close()


async def test_embedder_called_once_per_add_and_once_per_query(tmp_path: Path) -> None:
    emb = CountingEmbedder(HashingEmbedder())
    bank = await _filled(tmp_path / "m.db", emb)
    assert (emb.calls, emb.texts) == (5, 5)
    for _ in range(3):
        await bank.retrieve("sort numbers", k=3)
    assert (emb.calls, emb.texts) == (8, 8)  # the bank is never re-embedded
    vec = await bank.embed_query("sort numbers")
    for label in (True, False, None):
        await bank.search(vec, k=2, label=label)
    assert emb.calls == 9
    bank.close()


async def test_sees_writes_made_through_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    a = await _filled(path)
    b = CaseBank.open(path, HashingEmbedder())
    new = await b.add(Case(task="Parse a date from text", plan="regex", reward=0.0, label=False))
    assert (await a.retrieve("parse a date from text", k=1))[0].case.id == new.id
    await b.delete([new.id])
    assert new.id not in {h.case.id for h in await a.retrieve("parse a date", k=10)}
    await a.verify()
    a.close()
    b.close()


async def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    bank = await _filled(tmp_path / "m.db")
    with pytest.raises(ConfigError, match="k must be"):
        await bank.retrieve("x", k=0)
    with pytest.raises(ConfigError, match="already in bank"):
        case = (await bank.list(limit=1))[0]
        await bank.add(case)
    with pytest.raises(ConfigError, match="shape"):
        await bank.search(np.zeros(3, dtype=np.float32))
    with pytest.raises(ConfigError, match="hashing-256"):
        CaseBank.open(bank.conn, HashingEmbedder(dim=64))
    with pytest.raises(ConfigError, match="bank name"):
        CaseBank.open(bank.conn, HashingEmbedder(), name=" ")
    with pytest.raises(ValueError, match="reward"):
        Case(task="t", reward=float("nan"), label=True)
    bank.close()


# ----------------------------------------------------------------------- other processes

APPENDER = """
import asyncio, sys
from memory import Case, CaseBank, HashingEmbedder

async def main(path, tag, n):
    bank = CaseBank.open(path, HashingEmbedder())
    for i in range(n):
        case = await bank.add(Case(id=f"{tag}-{i}", task=f"task {tag} number {i}", plan="p",
                                   reward=1.0, label=i % 2 == 0))
        print(case.id, flush=True)
    bank.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def _appender(path: Path, tag: str, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(path), tag, str(n)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_two_processes_appending_concurrently_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    CaseBank.open(path, HashingEmbedder()).close()
    procs = [_appender(path, tag, 1000) for tag in ("a", "b")]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert len(out.split()) == 1000
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    bank = CaseBank.open(path, HashingEmbedder())
    await bank.verify()
    assert await bank.count() == 2000
    order = [c.id[0] for c in await bank.list()]  # "a" or "b", in commit order
    assert {c.id for c in await bank.list()} == {f"{t}-{i}" for t in "ab" for i in range(1000)}
    assert sum(x != y for x, y in itertools.pairwise(order)) > 1  # the writers did overlap
    for case in await bank.list():  # every case is found by its own task
        [hit] = await bank.retrieve(case.task, k=1)
        assert hit.case.id == case.id and hit.score == pytest.approx(1.0)
    bank.close()


async def test_kill_minus_9_mid_append_keeps_every_committed_case(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    await (await _filled(path)).aclose()  # with a snapshot, so the reopen replays the log
    proc = _appender(path, "k", 100_000)
    assert proc.stdout is not None
    for _ in range(300):  # let it commit a few hundred cases, then kill it mid-stream
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    printed = [line for line in proc.stdout.read().splitlines(keepends=True)]
    # every id it printed was committed before the print; a torn last line is not an id
    committed = {f"k-{i}" for i in range(300)} | {
        line.strip() for line in printed if line.endswith("\n")
    }
    bank = CaseBank.open(path, HashingEmbedder())
    await bank.verify()  # index ids == table ids
    stored = {c.id for c in await bank.list() if c.id.startswith("k-")}
    assert committed <= stored
    # beyond those, at most the one add in flight when the kill came
    assert len(stored) <= len(committed) + 1
    [hit] = await bank.retrieve("task k number 150", k=1)
    assert hit.case.id == "k-150"
    bank.close()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"just some text, not a database at all\n" * 10, "not an SQLite file"),
        (b"SQLite format 3\x00" + b"\x07" * 3000, "corrupt"),
        (None, "written by another program"),
    ],
)
def test_corrupt_or_foreign_files_are_refused_untouched(
    tmp_path: Path, content: bytes | None, needle: str
) -> None:
    path = tmp_path / "x.db"
    if content is None:
        other = sqlite3.connect(path)
        other.execute("CREATE TABLE people (name TEXT)")
        other.commit()
        other.close()
    else:
        path.write_bytes(content)
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    with pytest.raises(StoreError, match=needle):
        CaseBank.open(path, HashingEmbedder())
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime


# ---------------------------------------------------------------------------- export/import


async def test_export_import_round_trip(tmp_path: Path) -> None:
    bank = await _filled(tmp_path / "a.db")
    out = tmp_path / "cases.json"
    assert await bank.export_json(out) == 5
    # into a fresh store, opened without an embedder: the file's vectors are used as they are
    copy = CaseBank.open(tmp_path / "b.db", None)
    assert await copy.import_json(out) == 5
    assert await copy.import_json(out) == 0  # ids already there are skipped
    assert [c.model_dump() for c in await copy.list()] == [
        c.model_dump() for c in await bank.list()
    ]
    vec = await bank.embed_query("factorial")
    assert [h.case.id for h in await copy.search(vec, k=5)] == [
        h.case.id for h in await bank.search(vec, k=5)
    ]
    # a bank of another embedder embeds the tasks again, once for the whole file
    emb = CountingEmbedder(HashingEmbedder(dim=64))
    other = CaseBank.open(tmp_path / "c.db", emb)
    assert await other.import_json(out) == 5 and emb.calls == 1
    for b in (bank, copy, other):
        b.close()


async def test_import_of_a_bad_file_names_it(tmp_path: Path) -> None:
    bank = CaseBank.open(tmp_path / "a.db", HashingEmbedder())
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else", "cases": []}')
    with pytest.raises(ConfigError, match=r"bad\.json"):
        await bank.import_json(bad)
    with pytest.raises(ConfigError, match="no case export"):
        await bank.import_json(tmp_path / "missing.json")
    assert await bank.count() == 0
    bank.close()


# --------------------------------------------------------------------------- the real embedder


@pytest.mark.slow
async def test_minilm_retrieves_the_semantically_related_case(tmp_path: Path) -> None:
    bank = CaseBank.open(tmp_path / "m.db", minilm())
    cases = {
        "Book a flight from London to Paris for next Monday": "search flights, pick, pay",
        "Find a recipe for chocolate chip cookies": "search recipes, list ingredients",
        "Compute the area of a circle with radius 3": "use pi * r^2",
        "Summarise the latest news about the stock market": "fetch headlines, summarise",
    }
    for task, plan in cases.items():
        await bank.add(Case(task=task, plan=plan, reward=1.0, label=True))
    # no shared content words with the right case: only meaning links them
    queries = {
        "Reserve plane tickets to France": "Book a flight",
        "How do I bake biscuits with cocoa?": "Find a recipe",
        "What is the surface of a disc of given size?": "Compute the area",
    }
    for query, want in queries.items():
        [hit] = await bank.retrieve(query, k=1)
        assert hit.case.task.startswith(want), (query, hit.case.task)
    bank.close()
