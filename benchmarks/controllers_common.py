"""What the sections of `benchmarks/controller_eval.py` share: running tasks concurrently, tables,
targets, the results file each section writes its part of, and SC@m read off one run of n
samples."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from agentic.core import (
    Budget,
    Context,
    Controller,
    GenerateRequest,
    Generation,
    Message,
    Outcome,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    Task,
)
from backends import Backend
from controllers import SelfConsistency

RESULTS = Path(__file__).parent / "results" / "controllers.json"
console = Console(width=160)


class Target(BaseModel):
    """One of the issue's targets, whether it was met, and the numbers that decide it."""

    section: str
    target: str
    met: bool
    numbers: str


async def run_all(
    controller: Controller, tasks: Sequence[Task], concurrency: int = 16
) -> tuple[list[Outcome], float]:
    """Every task through `controller`, `concurrency` at a time, each under its own meter (so an
    outcome's usage is exactly what its task spent); the outcomes in task order, and wall time."""
    gate = asyncio.Semaphore(concurrency)
    ctx = Context()

    async def one(task: Task) -> Outcome:
        async with gate:
            with Budget() as meter:
                out = await controller(task, ctx)
            return out.model_copy(update={"usage": meter.spent})

    start = time.monotonic()
    outcomes = await asyncio.gather(*(one(t) for t in tasks))
    return list(outcomes), time.monotonic() - start


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    if isinstance(v, dict):
        return " ".join(f"{k}:{fmt(x)}" for k, x in v.items())
    return str(v)


def show(title: str, rows: Sequence[dict[str, Any]], cols: Sequence[str] | None = None) -> None:
    if not rows:
        return
    cols = list(cols or rows[0])
    table = Table(title=title)
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(fmt(r.get(c, "")) for c in cols))
    console.print(table)


def load_results() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save_section(name: str, data: dict[str, Any]) -> None:
    """Put `data` under `name` in the results file, keeping the other sections."""
    merged = {**load_results(), name: data}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    tmp.replace(RESULTS)  # a crash mid-write leaves the last complete file
    console.print(f"wrote section {name!r} to {RESULTS}")


# ---- self-consistency at m samples, from one run of n ----------------------------------------


@dataclass(frozen=True)
class Sample:
    answer: str
    score: float
    tokens: int


def sc_at(samples: Sequence[Sample], m: int) -> tuple[float, int]:
    """SC@m from the first m samples: the checker's score of the first sample that gives the
    majority answer (ties to the answer seen first, as `SelfConsistency`), and their tokens."""
    first = samples[:m]
    answers = [s.answer for s in first]
    winner = Counter(answers).most_common(1)[0][0]
    return first[answers.index(winner)].score, sum(s.tokens for s in first)


def sc_curve(per_task: Sequence[Sequence[Sample]]) -> list[dict[str, float]]:
    """SC@m for m = 1..n: mean accuracy and generated tokens per task over the first m samples,
    and (lower variance, for reference) the accuracy averaged over the n rotations of the
    sample order."""
    n = min(len(s) for s in per_task)
    curve = []
    for m in range(1, n + 1):
        first = [sc_at(s, m) for s in per_task]
        rotated = [sc_at([*s[r:], *s[:r]], m)[0] for s in per_task for r in range(n)]
        curve.append(
            {
                "m": m,
                "accuracy": mean([a for a, _ in first]),
                "accuracy_rotations": mean(rotated),
                "tokens": mean([t for _, t in first]),
            }
        )
    return curve


def at_tokens(curve: Sequence[dict[str, float]], tokens: float) -> tuple[float, float, str]:
    """SC's accuracy at `tokens` per task, linear between the neighbouring m; the (fractional)
    m it corresponds to; a note where `tokens` lies outside the curve (clamped)."""
    if tokens <= curve[0]["tokens"]:
        return curve[0]["accuracy"], 1.0, "below SC@1: clamped"
    for lo, hi in pairwise(curve):
        if tokens <= hi["tokens"]:
            w = (tokens - lo["tokens"]) / (hi["tokens"] - lo["tokens"])
            return lo["accuracy"] + w * (hi["accuracy"] - lo["accuracy"]), lo["m"] + w, ""
    return curve[-1]["accuracy"], curve[-1]["m"], f"above SC@{len(curve)}: clamped"


class Tap:
    """A backend that passes every call through and keeps the generations it returned."""

    def __init__(self, backend: Backend) -> None:
        self.backend, self.name = backend, backend.name
        self.capabilities = backend.capabilities
        self.generations: list[Generation] = []

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[list[Generation]]:
        out = await self.backend.generate(requests)
        self.generations += [g for gens in out for g in gens]
        return out

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return await self.backend.score(requests)

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        return self.backend.count_tokens(text_or_messages)

    async def aclose(self) -> None:
        return None  # the wrapped backend is the caller's to close


class SampledSC:
    """`SelfConsistency` that also reports its samples (text, generated tokens) in `info`."""

    def __init__(self, backend: Backend, n: int, params: SamplingParams) -> None:
        self.backend, self.n, self.params = backend, n, params

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        tap = Tap(self.backend)
        out = await SelfConsistency(tap, n=self.n, params=self.params)(task, ctx)
        samples = [{"text": g.text, "tokens": g.usage.completion_tokens} for g in tap.generations]
        return out.model_copy(update={"info": {**out.info, "samples": samples}})
