"""Replay: serve a run's recorded backend calls again, offline and bit-identically.

A run records every backend call as `backend.generate` / `backend.score` events (see
`backends.base`) in a JSONL trace. `ReplayBackend` indexes those events by the stable hash of
the request (`GenerateRequest.key()`) and answers each request with the recorded results, in
recorded order when the same request was made several times. No model is loaded. A request the
recording does not hold raises `ReplayMiss`, naming the request.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentic.core import (
    GenerateRequest,
    Generation,
    Message,
    ReplayMiss,
    ScoreRequest,
    ScoreResult,
    read_events,
)
from backends.base import BaseBackend, Capabilities


def _describe(req: GenerateRequest | ScoreRequest) -> str:
    text = (
        req.prompt
        if req.prompt is not None
        else (req.messages or (Message(role="user", content=""),))[-1].content
    )
    text = (text + req.prefix).replace("\n", " ")
    return f"{type(req).__name__}(key={req.key()}, text={text[:80]!r})"


class ReplayBackend(BaseBackend):
    def __init__(self, path: str | Path, *, backend: str | None = None) -> None:
        self.path = Path(path)
        self.name = f"replay:{self.path}"
        self._generations: dict[str, deque[list[Generation]]] = defaultdict(deque)
        self._scores: dict[str, deque[ScoreResult]] = defaultdict(deque)
        names: set[str] = set()
        for ev in read_events(self.path):
            if ev.type not in ("backend.generate", "backend.score"):
                continue
            if backend is not None and ev.payload.get("backend") != backend:
                continue
            names.add(str(ev.payload.get("backend")))
            key = ev.payload["key"]
            results = ev.payload["results"]
            if ev.type == "backend.generate":
                self._generations[key].append([Generation.model_validate(g) for g in results])
            else:
                self._scores[key].append(ScoreResult.model_validate(results[0]))
        self.recorded_backends = sorted(names)
        # structured_output: a recorded request keeps its response_format in its key, so callers
        # that ask for one when the backend can (generate_structured) replay the same requests
        # a request's interventions are part of its key: a steered run replays as recorded
        self.capabilities = Capabilities(
            logprobs=True,
            top_logprobs=20,
            prefix=True,
            score=True,
            structured_output=True,
            interventions=True,
        )

    def _take(self, table: dict[str, deque[Any]], req: GenerateRequest | ScoreRequest) -> Any:
        queue = table.get(req.key())
        if not queue:
            why = "was never recorded" if queue is None else "was replayed more often than recorded"
            raise ReplayMiss(f"{self.path}: {_describe(req)} {why}")
        return queue.popleft()

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        return [self._take(self._generations, r) for r in requests]

    async def _score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return [self._take(self._scores, r) for r in requests]

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        """Replay has no tokenizer: a whitespace count, good enough for reporting only."""
        if isinstance(text_or_messages, str):
            return len(text_or_messages.split())
        return sum(len(m.content.split()) for m in text_or_messages)


def from_uri(spec: str, **options: Any) -> ReplayBackend:
    """`replay:FILE` or `replay:FILE#BACKEND` (only that backend's calls)."""
    path, _, backend = spec.partition("#")
    return ReplayBackend(path, backend=backend or options.pop("backend", None))
