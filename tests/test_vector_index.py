"""VectorIndex: exact flat search against numpy, HNSW recall (random and real MiniLM vectors),
remove/replace semantics, the auto switch, snapshots and bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from minilm import minilm

from agentic.core import ConfigError, StoreError
from memory import VectorIndex


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(
    queries: np.ndarray, ids: np.ndarray, vecs: np.ndarray, k: int
) -> list[list[tuple[int, float]]]:
    sims = queries @ vecs.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [[(int(ids[j]), float(s[j])) for j in row] for row, s in zip(order, sims, strict=True)]


def recall(got: list[list[tuple[int, float]]], want: list[list[tuple[int, float]]]) -> float:
    hits = sum(len({i for i, _ in g} & {i for i, _ in w}) for g, w in zip(got, want, strict=True))
    return hits / sum(len(w) for w in want)


def test_flat_equals_numpy_brute_force() -> None:
    rng = np.random.default_rng(0)
    vecs = unit(rng, 3000, 48)
    ids = np.unique(rng.integers(-(10**12), 10**12, size=3100))[:3000]  # any int64 ids
    rng.shuffle(ids)
    index = VectorIndex(48, mode="flat")
    index.add(ids.tolist(), vecs)
    queries = unit(rng, 64, 48)
    pos = {int(i): r for r, i in enumerate(ids)}
    for k in (1, 10, 5000):  # k beyond the size gives everything
        got = index.search(queries, k)
        want = brute(queries, ids, vecs, k)
        if k <= 10:
            assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
        for q, g, w in zip(queries, got, want, strict=True):
            # the same set, and at each rank a hit whose true similarity is numpy's there
            # (over all 3000, float-rounding ties may swap neighbours: that is all we allow)
            assert sorted(i for i, _ in g) == sorted(i for i, _ in w)
            true = [float(q @ vecs[pos[i]]) for i, _ in g]
            np.testing.assert_allclose(true, [s for _, s in w], atol=1e-5)
            np.testing.assert_allclose([s for _, s in g], true, atol=1e-5)
    assert len(got[0]) == 3000
    # a 1-d query is one row
    assert index.search(queries[0], 3) == index.search(queries[:1], 3)


def test_hnsw_recall_on_20k_random_unit_vectors() -> None:
    rng = np.random.default_rng(1)
    vecs = unit(rng, 20_000, 64)  # uniform on the sphere: the hard case for graph search
    index = VectorIndex(64)  # auto: crosses hnsw_from=20_000 with this add
    index.add(range(20_000), vecs)
    assert index.mode == "hnsw"
    queries = unit(rng, 200, 64)
    got = index.search(queries, 10)
    r = recall(got, brute(queries, np.arange(20_000), vecs, 10))
    assert r >= 0.95, r
    # similarities are the true inner products of the returned ids
    i, s = got[0][0]
    assert s == pytest.approx(float(queries[0] @ vecs[i]), abs=1e-5)


@pytest.mark.slow
async def test_hnsw_recall_on_minilm_embeddings() -> None:
    subjects = ["a python script", "the database", "my laptop", "the web server", "a git branch"]
    verbs = ["crashes when", "gets slow after", "fails to start after", "loses data when"]
    events = ["upgrading packages", "the disk fills up", "two users log in", "it rains", "reboot"]
    texts = [
        f"{s} {v} {e} (ticket {n})"
        for n in range(4)
        for s in subjects
        for v in verbs
        for e in events
    ]
    queries = [f"why {s} {v} {e}" for s in subjects[:3] for v in verbs for e in events[:3]]
    e = minilm()
    vecs = await e.embed(texts)
    q = await e.embed(queries)
    index = VectorIndex(e.dim, hnsw_from=100)
    index.add(range(len(texts)), vecs)
    assert index.mode == "hnsw" and len(index) == 400
    r = recall(index.search(q, 10), brute(q, np.arange(len(texts)), vecs, 10))
    assert r >= 0.95, r


@pytest.mark.parametrize("mode", ["flat", "hnsw"])
def test_remove_and_replace(mode: str) -> None:
    rng = np.random.default_rng(2)
    vecs = unit(rng, 1000, 32)
    index = VectorIndex(32, mode=mode)  # type: ignore[arg-type]
    index.add(range(1000), vecs)
    assert index.mode == mode
    # the 200 nearest neighbours of one query: a removal the over-fetch must see past
    q = unit(rng, 1, 32)
    nearest = np.argsort(-(q @ vecs.T)[0])[:200]
    assert index.remove([*nearest.tolist(), 5000, int(nearest[0])]) == 200
    assert len(index) == 800 and int(nearest[0]) not in index and 5000 not in index
    live = np.setdiff1d(np.arange(1000), nearest)
    got = index.search(q, 10)
    want = brute(q, live, vecs[live], 10)
    if mode == "flat":
        assert [i for i, _ in got[0]] == [i for i, _ in want[0]]
    assert len(got[0]) == 10 and recall(got, want) >= 0.9
    # a removed id is never returned, even for its own vector
    for row in index.search(vecs[nearest[:20]], 50):
        assert len(row) == 50 and not {i for i, _ in row} & set(nearest.tolist())
    assert sorted(index.ids().tolist()) == live.tolist()

    # re-adding replaces: `moved` gets a new vector, and its old vector no longer finds it
    moved = int(live[-1])
    new = unit(rng, 1, 32)
    index.add([moved], new)
    assert len(index) == 800
    top = index.search(new, 1)[0][0]
    assert top[0] == moved and top[1] == pytest.approx(1.0, abs=1e-5)
    assert moved not in {i for i, _ in index.search(vecs[moved], 5)[0]}

    # removing more than a quarter of the graph rebuilds it; results stay right
    index.remove(live[:400].tolist())
    rest = live[400:]
    rest_vecs = np.where((rest == moved)[:, None], new, vecs[rest])
    queries = unit(rng, 30, 32)
    r = recall(index.search(queries, 10), brute(queries, rest, rest_vecs, 10))
    assert r >= (1.0 if mode == "flat" else 0.95) and len(index) == 400
    # removing everything leaves an empty index that still answers
    assert index.remove(index.ids().tolist()) == 400
    assert len(index) == 0 and index.search(queries[:2], 3) == [[], []]
    index.add([1], vecs[:1])
    assert index.search(vecs[0], 3)[0][0][0] == 1


def test_auto_switches_to_hnsw_at_threshold() -> None:
    rng = np.random.default_rng(3)
    vecs = unit(rng, 300, 16)
    index = VectorIndex(16, hnsw_from=100)
    index.add(range(99), vecs[:99])
    assert index.mode == "flat"
    index.add([99], vecs[99:100])
    assert index.mode == "hnsw" and len(index) == 100
    index.add(range(100, 300), vecs[100:])
    got = index.search(vecs[:50], 1)
    assert [row[0][0] for row in got] == list(range(50))  # each vector finds itself
    index.remove(range(290))
    assert index.mode == "hnsw" and len(index) == 10  # no way back, as designed


@pytest.mark.parametrize("mode", ["flat", "hnsw"])
def test_snapshot_round_trip_gives_identical_results(mode: str) -> None:
    rng = np.random.default_rng(4)
    vecs = unit(rng, 2000, 24)
    index = VectorIndex(24, mode=mode, ef_search=64)  # type: ignore[arg-type]
    index.add(range(2000), vecs)
    index.remove(range(0, 300, 2))  # tombstones, below the rebuild fraction
    index.add([1, 3], unit(rng, 2, 24))  # replaced vectors
    copy = VectorIndex.from_bytes(index.to_bytes())
    assert (copy.mode, copy.dim, copy.ef_search, len(copy)) == (mode, 24, 64, len(index))
    assert sorted(copy.ids().tolist()) == sorted(index.ids().tolist())
    queries = unit(rng, 100, 24)
    assert copy.search(queries, 10) == index.search(queries, 10)
    # both keep working afterwards (HNSW inserts run in parallel threads, so the two graphs
    # may differ slightly from here on: exact equality only for flat)
    more = unit(rng, 50, 24)
    for ix in (index, copy):
        ix.add(range(5000, 5050), more)
        ix.remove([5, 7, 9])
    a, b = copy.search(queries, 10), index.search(queries, 10)
    assert a == b if mode == "flat" else recall(a, b) >= 0.98


def test_damaged_snapshots_are_refused() -> None:
    index = VectorIndex(8, mode="flat")
    index.add([1, 2], unit(np.random.default_rng(5), 2, 8))
    data = bytearray(index.to_bytes())
    with pytest.raises(StoreError, match="magic"):
        VectorIndex.from_bytes(b"PK\x03\x04 not a snapshot")
    data[-10] ^= 0xFF
    with pytest.raises(StoreError, match="checksum"):
        VectorIndex.from_bytes(bytes(data))


def test_bad_input_names_the_value() -> None:
    index = VectorIndex(8)
    good = unit(np.random.default_rng(6), 3, 8)
    with pytest.raises(ConfigError, match=r"shape \(n, 8\).*\(3, 7\)"):
        index.add([1, 2, 3], good[:, :7])
    with pytest.raises(ConfigError, match="3 ids but 2 vectors"):
        index.add([1, 2, 3], good[:2])
    with pytest.raises(ConfigError, match="id 2 more than once"):
        index.add([1, 2, 2], good)
    with pytest.raises(ConfigError, match="ids must be ints"):
        index.add([1.5, 2.0, 3.0], good)  # type: ignore[list-item]
    bad = good.copy()
    bad[1, 4] = np.nan
    with pytest.raises(ConfigError, match="row 1 has NaN"):
        index.add([1, 2, 3], bad)
    assert len(index) == 0  # nothing half-added
    index.add([1, 2, 3], good)
    for k in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match=f"k must be a positive int, got {k!r}"):
            index.search(good, k)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"queries must have shape \(n, 8\)"):
        index.search(np.zeros((1, 9), dtype=np.float32), 1)
    with pytest.raises(ConfigError, match="row 0 has NaN"):
        index.search(np.full(8, np.inf), 1)
    with pytest.raises(ConfigError, match="mode"):
        VectorIndex(8, mode="ivf")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dim must be a positive int, got 0"):
        VectorIndex(0)
    with pytest.raises(ConfigError, match="hnsw_from"):
        VectorIndex(8, hnsw_from=0)
    assert "x" not in index and 1 in index and np.int64(2) in index


def test_concurrent_writers_and_readers_stay_consistent() -> None:
    rng = np.random.default_rng(7)
    vecs = unit(rng, 4000, 16)
    index = VectorIndex(16, hnsw_from=1000)  # the switch happens while threads race
    errors: list[BaseException] = []

    def writer(part: int) -> None:
        try:
            for start in range(part * 1000, (part + 1) * 1000, 50):
                index.add(range(start, start + 50), vecs[start : start + 50])
                index.remove([start])
        except BaseException as e:
            errors.append(e)

    def reader() -> None:
        try:
            for _ in range(100):
                for q, row in zip(vecs[:4], index.search(vecs[:4], 5), strict=True):
                    # every hit carries its own vector's similarity: no torn id mapping
                    for i, s in row:
                        assert s == pytest.approx(float(q @ vecs[i]), abs=1e-5)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(p,)) for p in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(index) == 4000 - 80 and index.mode == "hnsw"
    assert not any(i % 50 == 0 for i in index.ids().tolist())
    assert {row[0][0] for row in index.search(vecs[1:4], 1)} == {1, 2, 3}
