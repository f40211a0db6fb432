"""Entropy Adaptive Decoding against each of its models alone, on reasoning-gym arithmetic.

Small model: SmolLM2-135M-Instruct (its chat template). Large model: Gemma-3-270M, a *base*
model with no chat template, so it gets `PLAIN_TEMPLATE` (the task text and a blank line),
alone as inside EAD. All greedy, at most `--max-tokens` tokens per answer. The threshold is
picked by a sweep on tasks drawn with another seed (`--sweep-seed`) than the evaluation's
(seed 0): the best accuracy, ties to the lower large-model share. Then small alone, large
alone and EAD at that threshold run on the evaluation tasks. Every run puts all its tasks in
flight at once, so each backend batches them. Seconds are wall time on a shared CPU: compare
them within one run of this script only.

    .venv/bin/python benchmarks/ead_eval.py [--tasks 30] [--sweep-tasks 16]

prints the tables and writes `benchmarks/results/ead.json`. `ead_rows` and `sweep` are the
functions another benchmark calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arithmetic_configs import SUITES
from rich.console import Console
from rich.table import Table

from agentic.core import Context, Outcome, SamplingParams, Task, TaskSuite
from agentic.runtime.runner import RunResult, run_suite
from agentic.runtime.suites import load_suite
from backends import Backend, load_backend
from controllers import EntropyAdaptiveDecoding
from controllers.entropy_switch import PromptFormat, request_for, resolve_format

RESULTS = Path(__file__).parent / "results" / "ead.json"
GREEDY = SamplingParams(temperature=0.0)


class Alone:
    """One model, one call, rendered exactly as EAD renders it for that model."""

    def __init__(self, backend: Backend, role: str, max_tokens: int, fmt: PromptFormat = "auto"):
        self.backend, self.role = backend, role
        self.render = resolve_format(fmt, backend, "fmt")
        self.params = GREEDY.model_copy(update={"max_tokens": max_tokens})

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        request = request_for(
            self.render(task.input, ctx.system_prompt if ctx else None), "", self.params
        )
        [[gen]] = await self.backend.generate([request])
        share = 1.0 if self.role == "large" else 0.0
        return Outcome(
            task_id=task.id, output=gen.text, usage=gen.usage, info={"large_token_share": share}
        )


def row(name: str, result: RunResult) -> dict[str, Any]:
    n = max(1, len(result.outcomes))
    shares = [o.info.get("large_token_share", 0.0) for o in result.outcomes]
    return {
        "method": name,
        "accuracy": result.accuracy,
        "tokens_per_task": result.usage.completion_tokens / n,
        "large_token_share": sum(shares) / n,
        "large_char_share": sum(
            o.info.get("large_char_share", shares[i]) for i, o in enumerate(result.outcomes)
        )
        / n,
        "switches_per_task": sum(o.info.get("switches", 0) for o in result.outcomes) / n,
        "errors": result.errors,
        "seconds": result.seconds,
    }


def ead(
    small: Backend, large: Backend, threshold: float, **options: Any
) -> EntropyAdaptiveDecoding:
    return EntropyAdaptiveDecoding(small, large, threshold=threshold, params=GREEDY, **options)


async def sweep(
    small: Backend, large: Backend, suite: TaskSuite, thresholds: list[float], **options: Any
) -> list[dict[str, Any]]:
    """One EAD run per threshold (nats) on `suite`."""
    rows = []
    for t in thresholds:
        result = await run_suite(
            suite, ead(small, large, t, **options), concurrency=len(suite.tasks)
        )
        rows.append({"threshold": t, **row(f"EAD tau={t:g}", result)})
    return rows


def pick(rows: list[dict[str, Any]]) -> float:
    best = max(rows, key=lambda r: (r["accuracy"], -r["large_token_share"]))
    return float(best["threshold"])


async def ead_rows(
    small: Backend,
    large: Backend,
    suite: TaskSuite,
    threshold: float,
    *,
    max_tokens: int = 48,
    extra: Sequence[float] = (),
    **options: Any,
) -> tuple[list[dict[str, Any]], dict[float, list[Outcome]]]:
    """Small alone, large alone and EAD at `threshold` on `suite`, then EAD at each `extra`
    threshold (rows marked as not picked); also EAD's outcomes by threshold."""
    every = len(suite.tasks)
    rows = []
    for name, controller in (
        ("small alone (SmolLM2-135M-Instruct)", Alone(small, "small", max_tokens)),
        ("large alone (Gemma-3-270M base)", Alone(large, "large", max_tokens)),
    ):
        rows.append(row(name, await run_suite(suite, controller, concurrency=every)))
    outcomes: dict[float, list[Outcome]] = {}
    for t in (threshold, *extra):
        result = await run_suite(
            suite, ead(small, large, t, max_tokens=max_tokens, **options), concurrency=every
        )
        picked = "" if t == threshold else " (not picked)"
        rows.append({"threshold": t, **row(f"EAD tau={t:g}{picked}", result)})
        outcomes[t] = result.outcomes
    return rows, outcomes


def show(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title)
    cols = [
        "method",
        "accuracy",
        "tokens_per_task",
        "large_token_share",
        "large_char_share",
        "switches_per_task",
        "seconds",
    ]
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    Console(width=150).print(table)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="2terms-1digit", choices=sorted(SUITES))
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--sweep-tasks", type=int, default=16)
    ap.add_argument("--sweep-seed", type=int, default=1)
    ap.add_argument("--thresholds", default="1.0,1.5,2.0,2.5,3.0", help="nats, comma-separated")
    ap.add_argument(
        "--extra-thresholds",
        default="1.5,2.0,2.5",
        help="also run EAD at these on the evaluation tasks, to show the trade-off",
    )
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--chunk-tokens", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()

    small, large = load_backend("embedded:smollm2"), load_backend("embedded:gemma3-270m")
    options = {
        "window": args.window,
        "chunk_tokens": args.chunk_tokens,
        "max_tokens": args.max_tokens,
    }
    config = SUITES[args.suite]
    tune = load_suite("basic_arithmetic", n=args.sweep_tasks, seed=args.sweep_seed, config=config)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    swept = await sweep(small, large, tune, thresholds, **options)
    show(f"threshold sweep: {args.suite}, {args.sweep_tasks} tasks, seed {args.sweep_seed}", swept)
    threshold = pick(swept)

    suite = load_suite("basic_arithmetic", n=args.tasks, seed=0, config=config)
    options.pop("max_tokens")
    extra = [float(t) for t in args.extra_thresholds.split(",") if t and float(t) != threshold]
    rows, outcomes = await ead_rows(
        small, large, suite, threshold, max_tokens=args.max_tokens, extra=extra, **options
    )
    show(f"{args.suite}, {args.tasks} tasks, seed 0, tau={threshold:g} nats", rows)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "ead",
                "suite": {
                    "name": "basic_arithmetic",
                    "preset": args.suite,
                    "tasks": args.tasks,
                    "seed": 0,
                },
                "sweep": {"tasks": args.sweep_tasks, "seed": args.sweep_seed, "rows": swept},
                "threshold": threshold,
                "options": {**options, "max_tokens": args.max_tokens, "greedy": True},
                "rows": rows,
                "examples": [
                    {"threshold": t, "task_id": o.task_id, "score": o.score, **o.info}
                    for t, some in outcomes.items()
                    for o in some
                    if o.info.get("switches", 0) >= 2
                ][:4],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
