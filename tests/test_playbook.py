"""ACE playbook (memory/playbook.py): delta operations, determinism, all-or-nothing batches,
grow-and-refine deduplication, rendering under a token budget, persistence (refresh across
connections, JSON export, a process killed with SIGKILL mid-update, two processes writing)."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentic.core import ConfigError, StoreError
from memory.embedders import HashingEmbedder
from memory.playbook import (
    AddOp,
    DeleteOp,
    MergeOp,
    Playbook,
    PlaybookOpError,
    TagOp,
    UpdateOp,
)
from memory.playbook_ops import AnyOp, estimate_tokens
from memory.store import open_store

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def add(section: str, content: str) -> AddOp:
    return AddOp(section=section, content=content)


async def test_ids_are_section_prefix_and_a_counter_never_reused() -> None:
    pb = Playbook(dedup_threshold=None)
    entries = await pb.apply(
        [add("strategies", "Work right to left."), add("mistakes", "Dropping the carry.")]
    )
    assert [e.bullet_id for e in entries] == ["str-00001", "err-00002"]
    assert [e.effect for e in entries] == ["added", "added"]
    assert [(e.seq, e.batch) for e in entries] == [(1, 1), (2, 1)]
    await pb.apply([DeleteOp(id="err-00002")])
    [again] = await pb.apply([add("mistakes", "Dropping the carry.")])
    assert again.bullet_id == "err-00003" and "err-00002" not in pb
    assert [b.id for b in pb.bullets] == ["str-00001", "err-00003"] and pb.version == 3
    custom = Playbook(sections=["tips", "traps"])
    assert custom.sections == {"tips": "tip", "traps": "tra"}
    [e] = await custom.apply([{"op": "ADD", "section": "traps", "content": "Off by one."}])
    assert e.bullet_id == "tra-00001"


async def test_update_merge_delete_and_tag() -> None:
    pb = Playbook(dedup_threshold=None)
    await pb.apply(
        [add("strategies", "a"), add("strategies", "b"), add("formulas", "c")],
        source="task-1",
        at=T0,
    )
    later = T0 + timedelta(hours=1)
    tags = [TagOp(id="str-00001", tag="helpful")] * 2 + [TagOp(id="str-00002", tag="harmful")]
    await pb.apply([*tags, TagOp(id="frm-00003", tag="neutral")], at=later)
    a = pb.get("str-00001")
    assert a is not None and (a.helpful, a.harmful, a.neutral, a.score) == (2, 0, 0, 2)
    assert a.updated_at == later and a.created_at == T0
    await pb.apply([UpdateOp(id="frm-00003", content="c, revised")], source="task-2")
    c = pb.get("frm-00003")
    assert c is not None and c.content == "c, revised" and c.sources == ("task-1", "task-2")
    [merged] = await pb.apply(
        [MergeOp(ids=["str-00002", "str-00001", "frm-00003"], content="a and b")], source="t3"
    )
    assert (merged.effect, merged.bullet_id) == ("merged", "str-00002")
    [m] = pb.bullets
    assert (m.id, m.content, m.helpful, m.harmful, m.neutral) == ("str-00002", "a and b", 2, 1, 1)
    assert m.merged_from == ("str-00001", "frm-00003") and m.sources == ("task-1", "task-2", "t3")
    await pb.apply([DeleteOp(id="str-00002")])
    assert len(pb) == 0 and [e.seq for e in await pb.history()] == list(range(1, 11))


async def test_the_same_ops_give_the_same_playbook_and_the_log_replays_it() -> None:
    def ops(rng: random.Random, ids: list[str]) -> list[Any]:
        pick = rng.random()
        if pick < 0.5 or len(ids) < 3:
            return [add(rng.choice(["strategies", "mistakes"]), f"rule {rng.randrange(10**6)}")]
        if pick < 0.7:
            return [TagOp(id=rng.choice(ids), tag=rng.choice(["helpful", "harmful"]))]
        if pick < 0.85:
            return [MergeOp(ids=rng.sample(ids, 2), content=f"merged {rng.randrange(99)}")]
        return [UpdateOp(id=rng.choice(ids), content="updated"), DeleteOp(id=rng.choice(ids))]

    async def build(seed: int) -> Playbook:
        pb, rng = Playbook(embedder=HashingEmbedder(), dedup_threshold=0.8), random.Random(seed)
        for k in range(60):
            await pb.apply(ops(rng, [b.id for b in pb.bullets]), source=f"t{k}", at=T0)
        return pb

    one, two = await build(7), await build(7)
    assert one.bullets == two.bullets and len(one) > 5
    assert await one.to_json() == await two.to_json()
    replayed = Playbook(embedder=HashingEmbedder(), dedup_threshold=0.8)
    await replayed.replay(await one.history())
    assert replayed.bullets == one.bullets and await replayed.history() == await one.history()


async def test_a_bad_op_rejects_the_whole_batch() -> None:
    pb = Playbook(dedup_threshold=None)
    await pb.apply([add("strategies", "keep me")], at=T0)
    before, version, log = pb.bullets, pb.version, await pb.history()
    batch: list[AnyOp] = [
        add("strategies", "new"),
        TagOp(id="str-00001", tag="helpful"),
        DeleteOp(id="zz-9"),
    ]
    with pytest.raises(PlaybookOpError, match=r"op 2 \(DELETE\): no bullet 'zz-9'") as ei:
        await pb.apply(batch)
    assert ei.value.index == 2 and ei.value.bullet_id == "zz-9"
    with pytest.raises(PlaybookOpError, match=r"op 0 \(ADD\): unknown section 'tips'"):
        await pb.apply([add("tips", "x")])
    with pytest.raises(PlaybookOpError, match="name a bullet twice"):
        await pb.apply([MergeOp(ids=["str-00001", "str-00001"], content="x")])
    with pytest.raises(ConfigError, match=r"ops\[1\]\.ADD\.content"):
        await pb.apply([add("strategies", "ok"), {"op": "ADD", "section": "strategies"}])
    with pytest.raises(ConfigError, match="no time zone"):
        await pb.apply([add("strategies", "x")], at=datetime(2025, 1, 1))
    assert pb.bullets == before and pb.version == version and await pb.history() == log
    # the next batch takes the ids the rejected ones would have taken: nothing leaked
    [e] = await pb.apply([add("strategies", "new")])
    assert e.bullet_id == "str-00002"
    with pytest.raises(ConfigError, match="prefixes must be distinct"):
        Playbook(sections=["trap", "trapdoor"])


async def test_grow_and_refine_merges_a_near_duplicate_add() -> None:
    pb = Playbook(embedder=HashingEmbedder(), dedup_threshold=0.9)
    await pb.apply([add("strategies", "Check the sign of the result.")], source="t1", at=T0)
    entries = await pb.apply(
        [
            add("strategies", "check the sign of the result"),  # same words: cosine 1
            add("mistakes", "Check the sign of the result."),  # another section: kept
            add("strategies", "Convert every length to metres first."),
        ],
        source="t2",
    )
    assert [e.effect for e in entries] == ["deduplicated", "added", "added"]
    assert entries[0].bullet_id == "str-00001" and entries[0].similarity == pytest.approx(1.0)
    kept = pb.get("str-00001")
    assert kept is not None and kept.sources == ("t1", "t2") and len(pb) == 3
    off = Playbook(embedder=HashingEmbedder(), dedup_threshold=None)
    await off.apply([add("strategies", "Check the sign.")] * 2)
    assert len(off) == 2


def words(text: str) -> int:
    """A tokenizer-like count that is not additive over lines (whitespace-separated pieces)."""
    return len(text.split())


async def test_render_never_exceeds_its_budget_over_500_updates() -> None:
    pb, rng = Playbook(dedup_threshold=None), random.Random(0)
    budget = 200
    for k in range(500):
        ids = [b.id for b in pb.bullets]
        if ids and rng.random() < 0.4:
            await pb.apply([TagOp(id=rng.choice(ids), tag=rng.choice(["helpful", "harmful"]))])
        else:
            n = rng.randrange(3, 30)
            text = " ".join(f"w{rng.randrange(100)}" for _ in range(n))
            await pb.apply([add(rng.choice(list(pb.sections)), f"rule {k}: {text}")])
        for count in (estimate_tokens, words):
            assert count(pb.render(budget, count_tokens=count)) <= budget
    text = pb.render(budget)
    shown = [line.split("]")[0][1:] for line in text.splitlines() if line.startswith("[")]
    best = max(pb.bullets, key=lambda b: (b.score, b.updated_at))
    assert best.id in shown and 0 < len(shown) < len(pb)
    # the best-scored bullets are the ones shown: none left out scores above a shown one
    scores = {b.id: b.score for b in pb.bullets}
    assert min(scores[i] for i in shown) >= sorted(scores.values())[-len(shown) - 5]
    heads = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert heads == [s for s in pb.sections if s in heads]  # grouped, in section order
    assert estimate_tokens(text) > 0.8 * budget  # the budget is used, not wasted
    assert pb.render(0) == ""
    with pytest.raises(ConfigError, match="max_tokens"):
        pb.render(-1)


async def test_store_reopens_refreshes_and_applies_on_the_latest_state(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    a = await Playbook.open(path, dedup_threshold=None)
    b = await Playbook.open(path, dedup_threshold=None)
    await a.apply([add("strategies", "from a")])
    assert len(b) == 0 and await b.refresh() and [x.content for x in b.bullets] == ["from a"]
    assert not await b.refresh()
    await a.apply([add("strategies", "a again")])
    # b is stale, but its apply re-reads inside the transaction: no id is handed out twice
    [e] = await b.apply([add("mistakes", "from b")])
    assert e.bullet_id == "err-00003" and len(b) == 3 and b.version == 3
    other = await Playbook.open(path, name="other", sections=["tips"])
    assert len(other) == 0 and other.sections == {"tips": "tip"}
    for pb in (a, b, other):
        await pb.aclose()
    async with await Playbook.open(path) as again:
        assert [x.id for x in again.bullets] == ["str-00001", "str-00002", "err-00003"]
        assert len(await again.history()) == 3
    with pytest.raises(ConfigError, match="already exists with sections"):
        await Playbook.open(path, name="other", sections=["hints"])
    (tmp_path / "notes.txt").write_text("not a database")
    with pytest.raises(StoreError, match="not an SQLite file"):
        await Playbook.open(tmp_path / "notes.txt")


async def test_json_export_and_import_keep_bullets_and_log(tmp_path: Path) -> None:
    pb = Playbook(dedup_threshold=None)
    await pb.apply([add("strategies", "one"), add("formulas", "area = w * h")], source="t1")
    await pb.apply([TagOp(id="str-00001", tag="helpful"), DeleteOp(id="frm-00002")])
    data = await pb.to_json()
    copy = Playbook.from_json(data)
    assert copy.bullets == pb.bullets and await copy.history() == await pb.history()
    [e] = await copy.apply([add("mistakes", "two")])
    assert e.bullet_id == "err-00003" and e.seq == 5  # counters continue after the import
    conn = open_store(tmp_path / "shared.db")
    stored = await Playbook.open(conn, name="imported")
    await stored.import_json(data)
    assert stored.bullets == pb.bullets
    with pytest.raises(ConfigError, match="is not empty"):
        await stored.import_json(data)
    bare = Playbook.from_json(await pb.to_json(log=False))
    assert bare.bullets == pb.bullets and await bare.history() == []
    with pytest.raises(ConfigError, match="not a playbook export"):
        Playbook.from_json('{"bullets": []}')
    conn.close()


CHILD = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from memory.playbook import AddOp, Playbook

    async def main(path, tag, count):
        pb = await Playbook.open(path, dedup_threshold=None)
        print("ready", flush=True)
        while not os.path.exists(path + ".go"):  # start together with the other writer
            time.sleep(0.01)
        i = 0
        while count < 0 or i < count:
            ops = [AddOp(section="strategies", content=f"{tag} lesson {i}"),
                   AddOp(section="mistakes", content=f"{tag} mistake {i}")][: 2 if count < 0 else 1]
            await pb.apply(ops, source=f"{tag}-{i}")
            print(i, flush=True)  # only after the commit
            i += 1

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def child(tmp_path: Path, path: Path, tag: str, count: int) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(script), str(path), tag, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def start_together(procs: list[subprocess.Popen[str]], path: Path) -> None:
    """Wait until every child has opened the store, then let them all start writing."""
    assert all(p.stdout is not None and p.stdout.readline() == "ready\n" for p in procs)
    Path(f"{path}.go").touch()


async def test_a_process_killed_mid_update_leaves_every_committed_batch(tmp_path: Path) -> None:
    path = tmp_path / "kill.db"
    proc = child(tmp_path, path, "k", -1)
    start_together([proc], path)
    assert proc.stdout is not None
    committed = [int(proc.stdout.readline()) for _ in range(40)]
    os.kill(proc.pid, signal.SIGKILL)  # while it is inside (or between) transactions
    proc.wait()
    committed += [int(x) for x in proc.stdout.read().split()]
    pb = await Playbook.open(path, dedup_threshold=None)  # open_store runs quick_check
    contents = {b.content for b in pb.bullets}
    for i in committed:
        assert {f"k lesson {i}", f"k mistake {i}"} <= contents
    log = await pb.history()
    batches = max(committed) + 1
    assert len(log) in (2 * batches, 2 * batches + 2)  # at most the in-flight batch beyond
    assert [e.seq for e in log] == list(range(1, len(log) + 1)) and len(pb) == len(log)
    rebuilt = Playbook(dedup_threshold=None)
    await rebuilt.replay(log)
    assert rebuilt.bullets == pb.bullets
    await pb.aclose()


async def test_two_processes_adding_200_each_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    Playbook(open_store(path)).close()  # create the playbook before both start
    procs = [child(tmp_path, path, tag, 200) for tag in ("p", "q")]
    start_together(procs, path)
    outs = await asyncio.gather(*(asyncio.to_thread(p.communicate) for p in procs))
    assert [p.returncode for p in procs] == [0, 0]
    assert [len(out.split()) for out, _ in outs] == [200, 200]
    pb = await Playbook.open(path)
    assert len(pb) == 400 and len({b.id for b in pb.bullets}) == 400
    assert {b.content for b in pb.bullets} == {
        f"{t} lesson {i}" for t in ("p", "q") for i in range(200)
    }
    log = await pb.history()
    assert [e.seq for e in log] == list(range(1, 401)) and pb.version == 400
    writers = [e.source[0] for e in log if e.source]
    # the two really wrote concurrently: their transactions interleave in the log
    assert sum(a != b for a, b in itertools.pairwise(writers)) >= 1
    await pb.aclose()


@pytest.mark.slow
async def test_minilm_deduplicates_a_paraphrase_but_keeps_a_related_rule() -> None:
    from minilm import minilm

    pb = Playbook(embedder=minilm())
    await pb.apply([add("strategies", "Double-check the arithmetic before giving the answer.")])
    entries = await pb.apply(
        [
            add("strategies", "Before giving the answer, double check the arithmetic."),
            add("strategies", "Always verify your arithmetic before answering."),
            add("strategies", "Convert all units to metres before comparing lengths."),
        ]
    )
    assert [e.effect for e in entries] == ["deduplicated", "added", "added"]
    assert entries[0].similarity is not None and entries[0].similarity >= 0.9
    assert len(pb) == 3
