"""Accuracy-vs-compute curves from recordings of `agentic run --record`.

Each recording is one point: x is the mean cost per task (completion tokens, total tokens or
seconds, from `task.outcome` usage) and y the accuracy (mean score, as `agentic run` reports
it). Points are grouped into one line per controller: runs of the same controller type that
differ only in their size (best-of-N's `samples`, beam's `samples` and `width`, A*'s `k`,
direct's `max_tokens`) lie on one line, each point annotated with its size. Settings that
differ between runs of one type (reward, temperature, ...) split it into several lines, named
by those settings; several backends or suites in one plot add the backend or suite to the name.

matplotlib is imported only by `plot_budget`, so importing this module stays light.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from agentic.core import ConfigError, read_events

X_CHOICES = ("completion_tokens", "total_tokens", "seconds")
X_LABELS = {
    "completion_tokens": "generated (completion) tokens per task, mean",
    "total_tokens": "total (prompt + completion) tokens per task, mean",
    "seconds": "seconds per task, mean",
}

# which controller settings are its size (varied along a curve) and which shape the algorithm
# (a difference there is a different curve); settings a type does not use are ignored
_SEARCH = ("tokens_per_step", "max_steps", "temperature", "reward", "aggregation")
_SIZE: dict[str, tuple[str, ...]] = {
    "direct": ("max_tokens",),
    "bon": ("samples",),
    "pf": ("samples",),
    "epf": ("samples",),
    "beam": ("samples", "width"),
    "astar": ("k",),
}
_SHAPE: dict[str, tuple[str, ...]] = {
    "direct": (),
    "bon": _SEARCH,
    "pf": _SEARCH,
    "epf": (*_SEARCH, "lookahead"),
    "beam": _SEARCH,
    "astar": (*_SEARCH, "cost"),
}
_SIZE_NAMES = {"samples": "N", "width": "w", "k": "k", "max_tokens": "max_tokens"}
_NOT_SHAPE = {"type", "seed", "params"}  # for types this module does not know


class Point(BaseModel):
    """One recording: its controller, mean cost per task and accuracy."""

    model_config = ConfigDict(frozen=True)

    label: str  # the line it belongs to
    note: str  # its size on that line, e.g. "N=8"
    controller: dict[str, Any]
    backend: str
    suite: str
    x: float
    accuracy: float
    tasks: int
    file: str


def _normalize(controller: Any) -> tuple[str, dict[str, Any]]:
    """(type, settings) of a recorded controller; older recordings nest settings in `params`
    and spell the type as a class name (`{"type": "Direct", "params": {...}}`)."""
    if not isinstance(controller, dict):
        return "unknown", {}
    fields = {k: v for k, v in controller.items() if k != "params"}
    if isinstance(controller.get("params"), dict):
        fields = {**controller["params"], **fields}
    ctype = str(controller.get("type", "unknown")).lower()
    return ctype, fields


def _size_and_shape(ctype: str, fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    if ctype in _SIZE:
        size = {k: fields[k] for k in _SIZE[ctype] if k in fields}
        shape = {k: fields[k] for k in _SHAPE[ctype] if k in fields}
    else:
        size = {}
        shape = {k: v for k, v in fields.items() if k not in _NOT_SHAPE}
    return size, shape


def _fmt(v: Any) -> str:
    return json.dumps(v) if isinstance(v, dict | list) else str(v)


def _one(path: Path, x_name: str) -> dict[str, Any]:
    events = list(read_events(path))
    starts = [e for e in events if e.type == "run.start"]
    if not starts:
        raise ConfigError(f"{path} has no run.start event: not a recording of `agentic run`")
    if len(starts) > 1:
        raise ConfigError(f"{path} holds {len(starts)} runs (run.start events); plot one per file")
    start = starts[0].payload
    outcomes: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.type == "task.outcome":
            o = e.payload.get("outcome") or {}
            outcomes.setdefault(str(o.get("task_id")), o)  # the first, as a resumed run does
    if not outcomes:
        raise ConfigError(f"{path} has no task.outcome events: the run finished no task")
    usages = [o.get("usage") or {} for o in outcomes.values()]
    if x_name == "total_tokens":
        xs = [float(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)) for u in usages]
    else:
        xs = [float(u.get(x_name, 0)) for u in usages]
    # as `agentic run` reports accuracy: the mean over tasks that have a score
    scores = [float(o["score"]) for o in outcomes.values() if o.get("score") is not None]
    config = start.get("config") or {}
    ctype, fields = _normalize(config.get("controller"))
    size, shape = _size_and_shape(ctype, fields)
    suite = start.get("suite") or {}
    return {
        "controller": config.get("controller") or {},
        "ctype": ctype,
        "size": size,
        "shape": shape,
        "backend": str(config.get("backend_name") or config.get("backend") or "?"),
        "suite": str(suite.get("name", "?")),
        "x": sum(xs) / len(xs),
        "accuracy": sum(scores) / len(scores) if scores else 0.0,
        "tasks": len(outcomes),
        "file": str(path),
    }


def budget_points(paths: Iterable[str | Path], x: str = "completion_tokens") -> list[Point]:
    """One point per recording in `paths`, labelled by the line (controller) it belongs to;
    sorted by label, then x. Raises `ConfigError` for an unknown `x`, no paths, or a file that
    is not a recording of `agentic run` (naming the file)."""
    if x not in X_CHOICES:
        raise ConfigError(f"unknown --x {x!r}: choose one of {', '.join(X_CHOICES)}")
    files = [Path(p) for p in paths]
    if not files:
        raise ConfigError("no recordings given: pass files written by `agentic run --record`")
    rows = [_one(f, x) for f in files]

    backends = {r["backend"] for r in rows}
    suites = {r["suite"] for r in rows}
    points = []
    for r in rows:
        same_type = [o for o in rows if o["ctype"] == r["ctype"]]
        keys = sorted({k for o in same_type for k in o["shape"]})
        differ = [k for k in keys if len({_fmt(o["shape"].get(k)) for o in same_type}) > 1]
        label = " ".join([r["ctype"], *(f"{k}={_fmt(r['shape'].get(k))}" for k in differ)])
        if len(backends) > 1:
            label += f" @ {r['backend']}"
        if len(suites) > 1:
            label += f" [{r['suite']}]"
        note = " ".join(f"{_SIZE_NAMES.get(k, k)}={_fmt(v)}" for k, v in r["size"].items())
        points.append(
            Point(
                label=label,
                note=note,
                controller=r["controller"],
                backend=r["backend"],
                suite=r["suite"],
                x=r["x"],
                accuracy=r["accuracy"],
                tasks=r["tasks"],
                file=r["file"],
            )
        )
    return sorted(points, key=lambda p: (p.label, p.x, p.file))


def plot_budget(
    points: Sequence[Point],
    out: str | Path,
    x_name: str = "completion_tokens",
    title: str | None = None,
) -> Path:
    """Draw `points` as one accuracy-vs-cost line per label into `out` (PNG, or any format
    matplotlib knows by the suffix) and write the points beside it as JSON (same stem, .json).
    Returns the image's path."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    out = Path(out)
    data = out.with_suffix(".json")
    if out.suffix.lower() == ".json":
        raise ConfigError(f"--out {out} is where the points JSON goes; name an image (.png)")
    if x_name not in X_CHOICES:
        raise ConfigError(f"unknown --x {x_name!r}: choose one of {', '.join(X_CHOICES)}")
    if not points:
        raise ConfigError("nothing to plot: no points")

    lines: dict[str, list[Point]] = {}
    for p in sorted(points, key=lambda p: (p.label, p.x)):
        lines.setdefault(p.label, []).append(p)
    suites = sorted({p.suite for p in points})

    fig = Figure(figsize=(8, 5.5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    markers = "osD^v<>pP*Xh"
    for i, (label, pts) in enumerate(lines.items()):
        xs, ys = [p.x for p in pts], [p.accuracy for p in pts]
        (line,) = ax.plot(
            xs, ys, marker=markers[i % len(markers)], linewidth=1.8, markersize=7, label=label
        )
        for p in pts:
            if p.note:
                ax.annotate(
                    p.note,
                    (p.x, p.accuracy),
                    textcoords="offset points",
                    xytext=(6, 6) if i % 2 == 0 else (6, -13),  # alternate: fewer overlaps
                    fontsize=8,
                    color=line.get_color(),
                )
    xs_all = [p.x for p in points]
    if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(X_LABELS[x_name] + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("accuracy (mean score)")
    ax.set_ylim(-0.03, 1.05)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    ax.set_title(title or f"accuracy vs compute: {', '.join(suites)}")
    ax.legend(title="controller", fontsize=9, loc="best")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)

    data.write_text(
        json.dumps(
            {
                "x": x_name,
                "title": title,
                "image": out.name,
                "points": [p.model_dump(mode="json") for p in points],
            },
            indent=2,
        )
        + "\n"
    )
    return out
