"""One all-MiniLM-L6-v2 embedder per test session, shared by the test files that need it."""

from __future__ import annotations

import functools

from memory.embedders import SentenceTransformerEmbedder


@functools.cache
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()
