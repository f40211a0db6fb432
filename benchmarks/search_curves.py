"""Accuracy against generated tokens for every search algorithm, on the embedded SmolLM2-135M.

For each configuration of `arithmetic_configs.SUITES` (reasoning-gym `basic_arithmetic`, `--tasks`
tasks each, seed 0) and each controller below, the script runs the suite through `run_suite`
(16 tasks in flight), records it (`benchmarks/results/search/<reward>/<suite>/<name>.jsonl`,
replayable with `agentic replay`), then prints a table and writes `summary.json` and one PNG of
accuracy-vs-tokens curves per suite (`agentic.runtime.plot`).

Controllers, in the order they run (all steps end at "\\n\\n" or after 32 tokens, at most 4
steps, temperature 0.7): greedy; best-of-N; A* (k=4) with cost mean_gap; particle filtering and
entropic PF with look-ahead at N=4, then at N=8; A* with cost neglog (the g/h ablation); entropic
PF without look-ahead (N=4, then N=8); beam (N=4, width 2); PF and ePF at N=4 with sharper
particle weights (weight temperature 0.2: with the judge's nearly flat scores, the default 1.0
never lets the population collapse, so neither filter ever resamples).

Best-of-N is run once, with N=16 samples per task; BoN@n for n = 1, 2, 4, 8, 16 is read off that
run by splitting the 16 samples into 16/n disjoint groups of n and averaging over the groups
(each group is exactly a BoN@n run; averaging lowers the variance). The same samples give the
oracle: the checker as outcome reward picks the best-checked sample of a group (pass@n).
Accuracy is the mean checker score, as `agentic run` reports it (reasoning-gym gives partial
credit to some near answers). With `--reward head`, the judge run's samples (if present) are
rescored by the head instead of drawn again.

    .venv/bin/python benchmarks/search_curves.py --reward judge [--tasks 50]
    .venv/bin/python benchmarks/search_curves.py --reward head [--head HEAD.pt]
    .venv/bin/python benchmarks/search_curves.py --reward value --tasks 20

`--reward value` (issue #18's rerun) runs its own list, `value_controllers`: the trained value
model with every other setting at the spec's default, the ones chosen on the train families; its
best-of-N digest adds majority vote over the same samples, the baseline at equal tokens.

Controllers run in the order above, each on every suite, so a run cut short still compares the
first controllers on all tasks. A complete recording is kept and not run again (`--rerun` forces
it); one cut short is run again, and so is one over fewer tasks than `--tasks` asks for. Each
finished run also leaves a small digest beside its recording (`<name>.rows.json`: its curve
points and table rows), committed while the recordings are not, so a later checkout summarizes
and skips every run that finished anywhere: a longer run resumes suite by suite.
`--controllers` picks a subset (comma-separated names); `--summarize` only rebuilds the tables
and plots from the recordings and digests already there. The script
is not named search.py: run as a script, that name would shadow the `search` package.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arithmetic_configs import SUITES
from rich.console import Console
from rich.table import Table

from agentic.core import JSONLSink, Task, TaskSuite, Tracer, read_events
from agentic.runtime.plot import Point, budget_points, plot_budget
from agentic.runtime.runner import run_suite
from agentic.runtime.suites import load_suite
from agentic.specs.registry import BuildContext, Spec
from agentic.specs.searches import (
    AStarSpec,
    BeamSpec,
    BestOfNSpec,
    DirectSpec,
    EntropicParticleFilterSpec,
    ParticleFilterSpec,
)
from backends import Backend, TransformersBackend, load_backend
from search.base import StepGenerator
from search.best_of_n import split_steps
from search.head_reward import HeadReward
from search.rewards import rate

RESULTS = Path(__file__).parent / "results" / "search"
BON_N = 16


def controllers(reward: str, head: str | None) -> dict[str, Spec]:
    if reward == "value":
        return value_controllers()
    common: dict[str, Any] = {
        "reward": reward,
        "head": head,
        "tokens_per_step": 32,
        "max_steps": 4,
        "temperature": 0.7,
    }
    return {
        "greedy": DirectSpec(),
        f"bon-{BON_N}": BestOfNSpec(samples=BON_N, **common),
        "astar-mean_gap": AStarSpec(k=4, cost="mean_gap", **common),
        "pf-4": ParticleFilterSpec(samples=4, **common),
        "epf-4": EntropicParticleFilterSpec(samples=4, **common),
        "pf-8": ParticleFilterSpec(samples=8, **common),
        "epf-8": EntropicParticleFilterSpec(samples=8, **common),
        "astar-neglog": AStarSpec(k=4, cost="neglog", **common),
        "epf-4-no-lookahead": EntropicParticleFilterSpec(samples=4, lookahead=False, **common),
        "epf-8-no-lookahead": EntropicParticleFilterSpec(samples=8, lookahead=False, **common),
        "beam-4": BeamSpec(samples=4, width=2, **common),
        # the judge's scores are nearly flat (p = 0.42 ± 0.07): at T = 1 the weights never
        # collapse, so PF never resamples; T = 0.2 makes resampling and annealing happen
        "pf-4-sharp": ParticleFilterSpec(samples=4, weight_temperature=0.2, **common),
        "epf-4-sharp": EntropicParticleFilterSpec(samples=4, weight_temperature=0.2, **common),
    }


def value_controllers() -> dict[str, Spec]:
    """The rerun with the trained value model and the defaults chosen on the train families
    (issue #18: 2 steps of 32 tokens, T = 1.0, min_p 0.1): every setting is the spec's
    default, so this measures what `agentic run --controller X` does out of the box. The names
    say N; beam keeps 2 beams, A* expands k = 4 with its default cost."""
    return {
        "greedy": DirectSpec(),
        f"bon-{BON_N}": BestOfNSpec(samples=BON_N),
        "pf-8": ParticleFilterSpec(samples=8),
        "epf-8": EntropicParticleFilterSpec(samples=8),
        "astar": AStarSpec(reward="value"),
        "beam-8": BeamSpec(samples=8),
        "epf-8-no-lookahead": EntropicParticleFilterSpec(samples=8, lookahead=False),
        "pf-4": ParticleFilterSpec(samples=4),
        "epf-4": EntropicParticleFilterSpec(samples=4),
    }


async def run_one(backend: Backend, suite: TaskSuite, spec: Spec, path: Path) -> None:
    sink = JSONLSink(path)
    config = {"backend": "embedded:smollm2", "controller": spec.model_dump(mode="json")}
    try:
        with Tracer([sink]).activate():
            await run_suite(suite, BuildContext(backend, suite).build(spec), config=config)
    finally:
        sink.close()


# ---- best-of-N read off one run of N = 16 ---------------------------------------------------


@dataclass
class Sample:
    text: str
    tokens: int
    score: float | None
    check: float = 0.0  # the suite's checker on the text: its accuracy, as run_suite counts it


def bon_samples(path: Path) -> dict[str, list[Sample]]:
    """The samples of each task of a best-of-N recording, in the order they were drawn."""
    task_of_span: dict[str, str] = {}
    search_task: dict[str, str] = {}
    out: dict[str, list[Sample]] = {}
    node_of: dict[tuple[str, int], Sample] = {}
    for e in read_events(path):
        p = e.payload
        if e.type == "task":
            task_of_span[e.span_id] = p["task_id"]
        elif e.type == "search" and e.parent_id in task_of_span:
            search_task[e.span_id] = task_of_span[e.parent_id]
        elif e.type == "search.node" and e.parent_id in search_task:
            tid = search_task[e.parent_id]
            s = Sample(p["step"], int(p.get("tokens", 0)), None)
            out.setdefault(tid, []).append(s)
            node_of[(tid, p["node"])] = s
        elif e.type == "search.score" and e.parent_id in search_task:
            node_of[(search_task[e.parent_id], p["node"])].score = p["score"]
    return out


async def bon_points(
    samples: dict[str, list[Sample]], suite: TaskSuite, path: Path, reward: str
) -> list[Point]:
    tasks = {t.id: t for t in suite.tasks}
    tid_of = {id(s): tid for tid, ss in samples.items() for s in ss}
    for tid, ss in samples.items():
        checks = await asyncio.gather(*(suite.check(tasks[tid], s.text) for s in ss))
        for s, c in zip(ss, checks, strict=True):
            s.check = c
    points = []
    picks = [(f"bon ({reward})", "score"), ("bon (checker oracle)", "oracle")]
    if reward == "value":  # the baseline the issue names: a plain vote over the same samples
        picks.append(("majority vote", "vote"))
    for label, pick in picks:
        n = 1
        while n <= BON_N:
            acc, tok = [], []
            for ss in samples.values():
                groups = [ss[i : i + n] for i in range(0, len(ss) - n + 1, n)]
                for g in groups:
                    if pick == "oracle":
                        acc.append(max(s.check for s in g))
                    elif pick == "vote":  # the most common extracted answer, first drawn wins
                        answers = [suite.extract(tasks[tid_of[id(g[0])]], s.text) for s in g]
                        top = max(answers, key=lambda a: (answers.count(a), -answers.index(a)))
                        acc.append(g[answers.index(top)].check)
                    else:  # the first of the best-scored, as BestOfN picks
                        acc.append(max(g, key=lambda s: s.score or 0.0).check)
                    tok.append(sum(s.tokens for s in g))
            points.append(
                Point(
                    label=label,
                    note=f"N={n}",
                    controller={"type": "bon", "samples": n, "reward": reward},
                    backend="embedded:smollm2",
                    suite=suite.name,
                    x=sum(tok) / len(tok),
                    accuracy=sum(acc) / len(acc),
                    tasks=len(samples),
                    file=str(path),
                )
            )
            n *= 2
    return points


async def rescore(samples: dict[str, list[Sample]], suite: TaskSuite, reward: Any) -> None:
    """Score the samples again with `reward` (the head), as BestOfN would have."""
    tasks: dict[str, Task] = {t.id: t for t in suite.tasks}
    for tid, ss in samples.items():
        split = [tuple(split_steps(s.text, "\n\n")) for s in ss]
        for s, sc in zip(ss, await rate(reward, tasks[tid], split, "last"), strict=True):
            s.score = sc


# ---- the run ---------------------------------------------------------------------------------


PAUSE_S = 120.0  # with 16 tasks in flight events come seconds apart: a longer gap is a pause


def summarize_run(path: Path) -> dict[str, float]:
    """Per-task means of a recording: wall-clock seconds (the whole run, 16 tasks in flight,
    divided by the tasks; gaps between events longer than PAUSE_S, a stopped process, left
    out), reward calls, model calls, prompt tokens; and what the search did (issue #18 asks for
    both): the steps of each chosen answer, and the share of a particle filter's rounds that
    resampled (recordings from before `search.result` named its chosen node give no steps)."""
    events = list(read_events(path))
    outs = [e.payload["outcome"] for e in events if e.type == "task.outcome"]
    n = max(1, len(outs))
    usage = [o.get("usage", {}) for o in outs]
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(events)]
    row = {
        "seconds": sum(g for g in gaps if g <= PAUSE_S) / n,
        "reward_calls": sum(u.get("reward_calls", 0) for u in usage) / n,
        "model_calls": sum(u.get("model_calls", 0) for u in usage) / n,
        "prompt_tokens": sum(u.get("prompt_tokens", 0) for u in usage) / n,
    }
    # node ids are per search; search.result comes after its search span, under the task's
    parent: dict[tuple[str | None, int], int] = {}
    search_of: dict[str | None, str] = {}
    steps = []
    for e in events:
        if e.type == "search.node":
            parent[(e.parent_id, e.payload["node"])] = e.payload["parent"]
        elif e.type == "search":
            search_of[e.parent_id] = e.span_id
        elif e.type == "search.result" and e.payload.get("chosen") is not None:
            node, depth = e.payload["chosen"], 0
            while node:
                node, depth = parent[(search_of[e.parent_id], node)], depth + 1
            steps.append(depth)
    rounds = [e.payload for e in events if e.type == "search.round" and "resampled" in e.payload]
    if steps:
        row["steps"] = sum(steps) / len(steps)
    if rounds:
        row["resampled"] = sum(bool(r["resampled"]) for r in rounds) / len(rounds)
    return row


def complete(path: Path) -> bool:
    """A recording that reached its run.end (an interrupted one is run again)."""
    return path.exists() and any(e.type == "run.end" for e in read_events(path))


def stored(path: Path) -> Path:
    """The committed digest of a recording: its points and rows. Recordings are large and not
    committed, so a checkout without them still summarizes every run that finished somewhere."""
    return path.with_suffix(".rows.json")


def done(path: Path) -> bool:
    return complete(path) or stored(path).exists()


def tasks_of(path: Path) -> int:
    """How many tasks the finished run behind `path` covered: a larger `--tasks` runs it again
    (without `--rerun`), so a longer run resumes controller by controller and suite by suite."""
    rows = run_digest(path)[1] if complete(path) else load_digest(path)[1]
    return min((r["tasks"] for r in rows), default=0)


def reused(args: argparse.Namespace, name: str, label: str) -> Path | None:
    """A judge run that stands for this head run: greedy ignores the reward, and best-of-N's
    samples are rescored by the head rather than drawn again."""
    judge = args.out / "judge" / name / f"{label}.jsonl"
    if args.reward != "head":
        return None
    if label == "greedy" and done(judge):
        return judge
    if label == f"bon-{BON_N}" and complete(judge):
        return judge
    return None


def save_digest(path: Path, points: list[Point], rows: list[dict[str, Any]]) -> None:
    digest = {"points": [p.model_dump(mode="json") for p in points], "rows": rows}
    stored(path).write_text(json.dumps(digest, indent=1) + "\n")


def load_digest(path: Path) -> tuple[list[Point], list[dict[str, Any]]]:
    digest = json.loads(stored(path).read_text())
    return [Point.model_validate(p) for p in digest["points"]], digest["rows"]


async def run_all(args: argparse.Namespace, backend: Backend, console: Console) -> None:
    """Controller by controller, each on every suite, so that a run cut short still compares
    the first controllers on all tasks; recordings already complete are kept."""
    specs = controllers(args.reward, args.head)
    wanted = args.controllers.split(",") if args.controllers else list(specs)
    for label in wanted:
        if label not in specs:
            raise SystemExit(f"unknown controller {label!r}; choose from {', '.join(specs)}")
    for label in wanted:
        for name in args.suites.split(","):
            path = args.out / args.reward / name / f"{label}.jsonl"
            if not args.rerun and (
                (done(path) and tasks_of(path) >= args.tasks)
                or reused(args, name, label) is not None
            ):
                continue
            suite = load_suite(
                "basic_arithmetic", n=args.tasks, seed=args.seed, config=SUITES[name]
            )
            path.unlink(missing_ok=True)
            console.print(f"[bold]{label}[/] on {name} ...")
            await run_one(backend, suite, specs[label], path)
            if label == f"bon-{BON_N}":
                await bon_digest(args, suite, path, None, backend)
            else:
                save_digest(path, *run_digest(path))


async def one_suite(
    args: argparse.Namespace, name: str, backend: Backend | None, console: Console
) -> list[dict[str, Any]]:
    """Rows (controller, size, accuracy, tokens, ...) of one suite, from its recordings where
    they are here (refreshing their digests) and from the committed digests elsewhere; draws
    its curves."""
    suite = load_suite("basic_arithmetic", n=args.tasks, seed=args.seed, config=SUITES[name])
    folder = args.out / args.reward / name
    points: list[Point] = []
    rows: list[dict[str, Any]] = []
    for label in controllers(args.reward, args.head):
        path = folder / f"{label}.jsonl"
        source = reused(args, name, label) if not done(path) else None
        if label == f"bon-{BON_N}":
            got = await bon_digest(args, suite, path, source, backend)
        elif complete(source or path):
            got = run_digest(source or path)
            if source is None:
                save_digest(path, *got)
        elif done(source or path):
            got = load_digest(source or path)
        else:
            continue
        points += got[0]
        rows += got[1]
    if points:
        plot_budget(points, folder / "curve.png", x_name="completion_tokens", title=name)
    show(console, f"{name}: reward {args.reward}", rows)
    return rows


def run_digest(path: Path) -> tuple[list[Point], list[dict[str, Any]]]:
    # name each point by its file, which says more than the settings
    points = [p.model_copy(update={"label": path.stem}) for p in budget_points([path])]
    extra = summarize_run(path)
    return points, [{**row_of(p), **extra} for p in points]


def row_of(p: Point) -> dict[str, Any]:
    return {"controller": p.label, "size": p.note, "tasks": p.tasks, "accuracy": p.accuracy,
            "tokens": p.x}  # fmt: skip


async def bon_digest(
    args: argparse.Namespace,
    suite: TaskSuite,
    path: Path,
    source: Path | None,
    backend: Backend | None,
) -> tuple[list[Point], list[dict[str, Any]]]:
    """BoN@n curves read off the N = 16 run (rescored by the head when the samples are the
    judge's); nothing when neither a recording nor a digest is here."""
    if source is None and not complete(path):
        return load_digest(path) if done(path) else ([], [])
    samples = bon_samples(source or path)
    if source is not None:
        assert isinstance(backend, TransformersBackend)
        steps = StepGenerator(backend, system_prompt=suite.system_prompt)
        await rescore(samples, suite, HeadReward.load(backend, args.head, messages=steps.messages))
    points = await bon_points(samples, suite, source or path, args.reward)
    rows = [row_of(p) for p in points]
    save_digest(path, points, rows)
    return points, rows


def pooled(per_suite: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows over all suites: task-weighted means of the rows every suite has."""
    keys = [(r["controller"], r["size"]) for r in next(iter(per_suite.values()), [])]
    out = []
    for key in keys:
        rows = [r for rs in per_suite.values() for r in rs if (r["controller"], r["size"]) == key]
        if len(rows) != len(per_suite):
            continue
        n = sum(r["tasks"] for r in rows)
        merged: dict[str, Any] = {"controller": key[0], "size": key[1], "tasks": n}
        for col in ("accuracy", "tokens", "seconds", "reward_calls", "model_calls", "steps",
                    "resampled"):  # fmt: skip
            if all(col in r for r in rows):
                merged[col] = sum(r[col] * r["tasks"] for r in rows) / n
        out.append(merged)
    return out


def show(console: Console, title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title)
    cols = ("controller", "size", "tasks", "accuracy", "gen. tokens/task", "s/task", "PRM/task",
            "steps", "resampled")  # fmt: skip
    for col in cols:
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["controller"],
            r["size"],
            str(r["tasks"]),
            f"{r['accuracy']:.1%}",
            f"{r['tokens']:.1f}",
            f"{r['seconds']:.2f}" if "seconds" in r else "",
            f"{r['reward_calls']:.1f}" if "reward_calls" in r else "",
            f"{r['steps']:.2f}" if "steps" in r else "",
            f"{r['resampled']:.0%}" if "resampled" in r else "",
        )
    console.print(table)


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, checked on this suite's rows."""
    out: dict[str, Any] = {}
    bon16 = next(
        (r for r in rows if r["controller"].startswith("bon (") and r["size"] == "N=16"), None
    )
    if bon16:
        for name in ("astar-neglog", "astar-mean_gap", "astar"):
            a = next((r for r in rows if r["controller"] == name), None)
            if a:
                out[f"{name} reaches BoN@16 accuracy with <= 1/3 of its tokens"] = bool(
                    a["accuracy"] >= bon16["accuracy"] and a["tokens"] <= bon16["tokens"] / 3
                )
    for n, sharp in ((4, ""), (8, ""), (4, "-sharp")):
        pf = next((r for r in rows if r["controller"] == f"pf-{n}{sharp}"), None)
        epf = next((r for r in rows if r["controller"] == f"epf-{n}{sharp}"), None)
        if pf and epf:
            weights = " (weight temperature 0.2)" if sharp else ""
            out[f"epf >= pf at N={n}{weights}"] = bool(epf["accuracy"] >= pf["accuracy"])
    return out


async def main_async(args: argparse.Namespace) -> None:
    console = Console(width=120)
    # rescoring the judge's best-of-N samples with the head needs the model
    need_model = not args.summarize or any(
        complete(args.out / "judge" / name / f"bon-{BON_N}.jsonl")
        for name in args.suites.split(",")
    )
    backend = load_backend("embedded:smollm2") if need_model else None
    if not args.summarize:
        assert backend is not None
        await run_all(args, backend, console)
    per_suite = {
        name: await one_suite(args, name, backend, console) for name in args.suites.split(",")
    }
    everything = pooled(per_suite)
    show(console, f"all suites: reward {args.reward}", everything)
    report: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "suites": {
            name: {"rows": rows, "targets": targets(rows)} for name, rows in per_suite.items()
        },
        "all": {"rows": everything, "targets": targets(everything)},
    }
    out = args.out / args.reward / "summary.json"
    out.write_text(json.dumps(report, indent=2))
    console.print(targets(everything))
    console.print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--reward",
        choices=["judge", "head", "value"],
        default="judge",
        help="value: the trained value model with the chosen defaults (issue #18's rerun)",
    )
    ap.add_argument("--head", default=str(RESULTS.parent / "head_reward.pt"), help="the head")
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--controllers", default="", help="comma-separated names; default: all")
    ap.add_argument("--summarize", action="store_true", help="only tables and plots")
    ap.add_argument("--rerun", action="store_true", help="run again what is already recorded")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.reward != "head":
        args.head = None
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
