"""Accuracy against cost across the loaded runs: the points of `agentic plot budget`
(`agentic.runtime.plot.budget_points`, one per recording, one line per controller), with the
axis the page draws them on (log scale when the costs span a factor of ten or more, as the
plot's), ticks included, so the page only maps numbers to pixels."""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel

from agentic.runtime.plot import X_LABELS, budget_points


class CurvePoint(BaseModel):
    run: int | None  # the run it came from, to open it on click
    note: str  # its size on its line, e.g. "N=8"
    x: float
    accuracy: float
    tasks: int
    file: str


class CurveLine(BaseModel):
    label: str
    points: list[CurvePoint]


class Curves(BaseModel):
    x: str
    x_label: str
    log_x: bool
    x_min: float
    x_max: float
    ticks: list[float]
    lines: list[CurveLine]
    skipped: list[str]  # runs left out, and why


def curves(runs: dict[Path, int], x: str, skipped: list[str]) -> Curves:
    """The curves of the recordings `runs` (file -> run id); `skipped` says which were left out.
    Raises `ConfigError` for an unknown `x`."""
    points = budget_points(list(runs), x=x) if runs else []
    lines: dict[str, list[CurvePoint]] = {}
    for p in points:
        lines.setdefault(p.label, []).append(
            CurvePoint(
                run=runs.get(Path(p.file)),
                note=p.note,
                x=p.x,
                accuracy=p.accuracy,
                tasks=p.tasks,
                file=p.file,
            )
        )
    xs = [p.x for p in points]
    lo, hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    log_x = lo > 0 and hi / lo >= 10
    if log_x:
        x_min, x_max = lo / 1.3, hi * 1.3
        ticks = [
            m * 10.0**e
            for e in range(math.floor(math.log10(x_min)), math.ceil(math.log10(x_max)) + 1)
            for m in (1, 2, 5)
            if x_min <= m * 10.0**e <= x_max
        ]
    else:
        x_min, x_max = 0.0, (hi * 1.08 if hi > 0 else 1.0)
        ticks = _nice_ticks(x_max)
    return Curves(
        x=x,
        x_label=X_LABELS[x],
        log_x=log_x,
        x_min=x_min,
        x_max=x_max,
        ticks=ticks,
        lines=[CurveLine(label=k, points=v) for k, v in lines.items()],
        skipped=skipped,
    )


def _nice_ticks(top: float) -> list[float]:
    """0 and multiples of a 1, 2 or 5 step up to `top`, about six of them."""
    raw = top / 6
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [k * step for k in range(int(top / step) + 1)]
