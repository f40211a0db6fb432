"""Accuracy against generated tokens for every search algorithm, on the embedded SmolLM2-135M.

For each suite configuration and each controller (greedy, best-of-N for several N, beam,
particle filtering, entropic particle filtering with and without look-ahead, A*), the script
runs the suite through `run_suite`, records it (`benchmarks/results/search/<suite>/<name>.jsonl`,
replayable with `agentic replay`), then draws the curves with `agentic.plot` (one PNG and JSON
per suite) and prints a table.

The full benchmark of issue #4 (3 configurations x >= 50 tasks, N up to 16, judge and head
rewards, the its_hub comparison) takes hours on a 2-core CPU; the defaults are a small run:

    .venv/bin/python benchmarks/search_curves.py [--tasks 10] [--reward judge|checker] [--max-n 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentic.build import ControllerSpec, build_controller
from agentic.core import JSONLSink, Tracer
from agentic.plot import budget_points, plot_budget
from agentic.runner import run_suite
from agentic.suites import load_suite
from backends import load_backend

SUITES: dict[str, dict[str, Any]] = {
    "add-1digit": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    "add-3terms": {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1},
    "add-2digit": {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2},
}


def controllers(max_n: int, reward: str) -> dict[str, ControllerSpec]:
    common: dict[str, Any] = {"reward": reward, "tokens_per_step": 32, "max_steps": 4}
    specs = {"greedy": ControllerSpec(type="direct")}
    n = 1
    while n <= max_n:
        specs[f"bon-{n}"] = ControllerSpec(type="bon", samples=n, **common)
        n *= 2
    specs["beam"] = ControllerSpec(type="beam", samples=max_n, width=2, **common)
    specs["pf"] = ControllerSpec(type="pf", samples=max_n, **common)
    specs["epf"] = ControllerSpec(type="epf", samples=max_n, **common)
    specs["epf-no-lookahead"] = ControllerSpec(type="epf", samples=max_n, lookahead=False, **common)
    if reward == "judge":  # A* needs a process reward; the checker only scores whole answers
        specs["astar"] = ControllerSpec(type="astar", k=max_n, **common)
    return specs


async def run_one(backend: Any, suite: Any, spec: ControllerSpec, path: Path) -> float:
    sink = JSONLSink(path)
    config = {"backend": "embedded:smollm2", "controller": spec.model_dump(mode="json")}
    try:
        with Tracer([sink]).activate():
            result = await run_suite(suite, build_controller(spec, backend, suite), config=config)
    finally:
        sink.close()
    return result.accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-n", type=int, default=4)
    ap.add_argument("--reward", choices=["judge", "checker"], default="judge")
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "search")
    args = ap.parse_args()

    backend = load_backend("embedded:smollm2")
    console = Console()
    summary: dict[str, Any] = {}
    for name in args.suites.split(","):
        suite = load_suite("basic_arithmetic", n=args.tasks, seed=args.seed, config=SUITES[name])
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for label, spec in controllers(args.max_n, args.reward).items():
            path = folder / f"{label}.jsonl"
            path.unlink(missing_ok=True)
            asyncio.run(run_one(backend, suite, spec, path))
            paths.append(path)
        points = budget_points(paths)
        plot_budget(points, folder / "curve.png", x_name="completion_tokens", title=name)
        table = Table(title=f"{name}: {args.tasks} tasks, reward {args.reward}")
        for col in ("controller", "accuracy", "generated tokens / task"):
            table.add_column(col)
        for p in points:
            table.add_row(Path(p.file).stem, f"{p.accuracy:.0%}", f"{p.x:.1f}")
        console.print(table)
        summary[name] = [
            {"controller": Path(p.file).stem, "accuracy": p.accuracy, "tokens": p.x} for p in points
        ]
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "suites": summary}
    (args.out / "summary.json").write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
