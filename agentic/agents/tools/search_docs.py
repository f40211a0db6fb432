"""`search_docs`: BM25 retrieval over a local folder of text files.

Okapi BM25 (Robertson and Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond",
2009) scores a passage D for a query Q as
    sum over q in Q of IDF(q) * f(q, D) * (k1 + 1) / (f(q, D) + k1 * (1 - b + b * |D| / avgdl))
with term frequency f, passage length |D| and mean passage length avgdl. The scoring itself is
the `bm25s` library's (k1=1.5, b=0.75 by default); this module decides what a passage is:
a paragraph of a `.txt`, `.md` or `.rst` file, with long paragraphs cut at `max_chars`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from agentic.agents.tools.base import Tool
from agentic.core import ConfigError

__all__ = ["DocIndex", "Passage", "search_docs_tool"]

SUFFIXES = (".txt", ".md", ".rst")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


class Passage(BaseModel):
    """One retrievable piece of a file: its path relative to the folder, and its text."""

    model_config = ConfigDict(frozen=True)

    file: str
    text: str
    score: float = 0.0


def split_passages(text: str, max_chars: int) -> list[str]:
    """Paragraphs of `text`; a paragraph longer than `max_chars` is cut at word boundaries."""
    passages: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        words = paragraph.split()
        chunk: list[str] = []
        size = 0
        for word in words:
            if chunk and size + 1 + len(word) > max_chars:
                passages.append(" ".join(chunk))
                chunk, size = [], 0
            chunk.append(word)
            size += len(word) + (1 if size else 0)
        if chunk:
            passages.append(" ".join(chunk))
    return passages


class DocIndex:
    """A BM25 index over the passages of every text file under `folder` (recursive)."""

    def __init__(self, folder: str | Path, *, max_chars: int = 1200) -> None:
        import bm25s  # imported here: only users of search_docs pay for it

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ConfigError(f"search_docs folder does not exist or is not a folder: {folder}")
        self.passages: list[Passage] = []
        for path in sorted(self.folder.rglob("*")):
            if path.suffix.lower() in SUFFIXES and path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                rel = path.relative_to(self.folder).as_posix()
                self.passages.extend(
                    Passage(file=rel, text=p) for p in split_passages(text, max_chars)
                )
        if not self.passages:
            raise ConfigError(
                f"search_docs folder has no non-empty {', '.join(SUFFIXES)} files: {folder}"
            )
        self._tokenize = bm25s.tokenize
        self._retriever = bm25s.BM25()
        tokens = self._tokens([p.text for p in self.passages])
        self._retriever.index(tokens, show_progress=False)

    def _tokens(self, texts: list[str]) -> Any:
        # Strings, not ids: ids from separate tokenize() calls would not share a vocabulary.
        return self._tokenize(texts, stopwords="en", return_ids=False, show_progress=False)

    def search(self, query: str, k: int) -> list[Passage]:
        """The top-`k` passages with a positive score, best first."""
        tokens = self._tokens([query])
        if not any(tokens[0]):
            return []
        k = min(k, len(self.passages))
        ids, scores = self._retriever.retrieve(tokens, k=k, show_progress=False)
        return [
            self.passages[int(i)].model_copy(update={"score": float(s)})
            for i, s in zip(ids[0], scores[0], strict=True)
            if s > 0
        ]


def search_docs_tool(folder: str | Path, *, k: int = 3, name: str = "search_docs") -> Tool:
    """A tool that returns the `k` passages of `folder`'s text files most relevant to a query."""
    if k < 1:
        raise ConfigError(f"search_docs k must be >= 1, got {k}")
    index = DocIndex(folder)

    def search_docs(query: str) -> str:
        """Search the local documentation and return the most relevant passages.

        Args:
            query: Keywords or a question describing what to look for.
        """
        hits = index.search(query, k)
        if not hits:
            return f"no passage matches {query!r}"
        return "\n\n".join(f"[{i}] {hit.file}\n{hit.text}" for i, hit in enumerate(hits, 1))

    return Tool(search_docs, name=name, timeout_s=10.0)
