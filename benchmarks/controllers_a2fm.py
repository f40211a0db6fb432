"""The A2FM section of `benchmarks/controller_eval.py`: the router against each fixed mode, by
cost-of-pass (Chen et al. 2025, "A²FM": cost spent per correct answer), on `MixedSuite`.

Modes: instant = greedy `Direct` (32 tokens); reasoning = `SelfConsistency` (n=4, 64 tokens,
temperature 0.7); agentic = `ToolAgent` with the calculator (at most 4 steps, a tool call required
before the answer), given the question without the suite's answer-format line
(`WithoutFormatLine`). All three run on the train split; each outcome becomes a `RouteRecord`
(tokens = prompt + completion tokens the task spent, seconds = its model calls' latency). λ, the
cost weight of `LearnedPolicy` (MiniLM embedding + surface features), is picked by 5-fold
cross-validation on the train split, accuracy first: among the λ within 2 points of the best
held-out accuracy, the one with the fewest tokens per correct answer. The policy fitted on the
whole train split with that λ is saved to `results/router.json`. On the test split the three
modes run alone, then `A2FMRouter` runs end to end with the learned policy and with
`SelfTagPolicy` (the model's own tag); the routing call's cost counts. The oracle takes, per
task, the cheapest mode that is right (the cheapest mode where none is). For the trade-off, the
policy at every λ also routes the test tasks offline, reading the modes' logged outcomes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from controllers_common import Target, show
from mixed_suite import KINDS, MixedSuite

from agentic.agents import ToolAgent
from agentic.agents.tools import calculator
from agentic.core import Context, Controller, Outcome, SamplingParams, Task
from agentic.runtime.runner import run_suite
from agentic.runtime.suites import ANSWER_INSTRUCTION
from backends import Backend
from controllers import (
    A2FMRouter,
    Direct,
    LearnedPolicy,
    RouteRecord,
    SelfConsistency,
    SelfTagPolicy,
)
from controllers.router import MODES, Mode, RoutingPolicy
from memory import Embedder

ROUTER = Path(__file__).parent / "results" / "router.json"
FOLDS = 5


class WithoutFormatLine:
    """`inner` sees the question without the suite's answer-format line. ToolAgent's JSON action
    already has a `final_answer` field; with the line as well, SmolLM2 calls the calculator
    again and again and never answers (0 of 6 in a pilot; 3 of 3 right without the line)."""

    def __init__(self, inner: Controller) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"WithoutFormatLine({self.inner!r})"

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        question = task.input.removesuffix(f"\n{ANSWER_INSTRUCTION}")
        return await self.inner(task.model_copy(update={"input": question}), ctx or Context())


def modes(backend: Backend) -> dict[str, Controller]:
    return {
        "instant": Direct(backend, params=SamplingParams(temperature=0.0, max_tokens=32)),
        "reasoning": SelfConsistency(
            backend, n=4, params=SamplingParams(temperature=0.7, max_tokens=64)
        ),
        "agentic": WithoutFormatLine(
            ToolAgent(backend, [calculator], max_steps=4, tool_choice="required")
        ),
    }


def tokens(o: Outcome) -> float:
    return float(o.usage.prompt_tokens + o.usage.completion_tokens)


def cost_of_pass(
    name: str, tasks: Sequence[Task], outcomes: Sequence[Outcome], chosen: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, cost per task and per correct answer (None where nothing is correct), and
    the modes chosen per task kind."""
    correct = sum(o.score or 0.0 for o in outcomes)
    tok, sec = sum(map(tokens, outcomes)), sum(o.usage.seconds for o in outcomes)
    per_kind: dict[str, dict[str, int]] = {k: {m: 0 for m in MODES} for k in KINDS}
    for t, m in zip(tasks, chosen, strict=True):
        per_kind[t.metadata["kind"]][m] += 1
    return {
        "method": name,
        "accuracy": correct / len(outcomes),
        "tokens_per_task": tok / len(outcomes),
        "seconds_per_task": sec / len(outcomes),
        "tokens_per_correct": tok / correct if correct else None,
        "seconds_per_correct": sec / correct if correct else None,
        "modes": {k: "/".join(str(v[m]) for m in MODES) for k, v in per_kind.items()},
    }


async def run_modes(
    suite: MixedSuite, ctrls: dict[str, Controller], concurrency: int
) -> dict[str, list[Outcome]]:
    return {
        m: (await run_suite(suite, c, concurrency=concurrency)).outcomes for m, c in ctrls.items()
    }


def records(tasks: Sequence[Task], runs: dict[str, list[Outcome]]) -> list[RouteRecord]:
    return [
        RouteRecord(
            input=t.input,
            mode=cast(Mode, m),
            score=o.score or 0.0,
            tokens=tokens(o),
            seconds=o.usage.seconds,
        )
        for m, outs in runs.items()
        for t, o in zip(tasks, outs, strict=True)
    ]


async def route_all(policy: LearnedPolicy, tasks: Sequence[Task]) -> list[str]:
    """The mode `policy` picks for each task (an embedding, no model call)."""
    return [(await policy.route(t)).mode for t in tasks]


async def fitted(
    embedder: Embedder, lam: float, tasks: Sequence[Task], runs: dict[str, list[Outcome]]
) -> LearnedPolicy:
    policy = LearnedPolicy(embedder, lam=lam)
    await policy.fit(records(tasks, runs))
    return policy


async def cross_validate(
    tasks: Sequence[Task], runs: dict[str, list[Outcome]], embedder: Embedder, lam: float
) -> dict[str, Any]:
    """Held-out routing quality of λ: fit on 4 folds, route the 5th, read its logged outcome.
    Tasks alternate kinds, so folds by index hold every kind."""
    chosen = [""] * len(tasks)
    for f in range(FOLDS):
        keep = [i for i in range(len(tasks)) if i % FOLDS != f]
        sub = {m: [outs[i] for i in keep] for m, outs in runs.items()}
        policy = await fitted(embedder, lam, [tasks[i] for i in keep], sub)
        held = list(range(f, len(tasks), FOLDS))
        for i, m in zip(held, await route_all(policy, [tasks[i] for i in held]), strict=True):
            chosen[i] = m
    picked = [runs[m][i] for i, m in enumerate(chosen)]
    return {"lam": lam, **cost_of_pass(f"learned λ={lam:g} (CV)", tasks, picked, chosen)}


def pick_lam(sweep: list[dict[str, Any]]) -> float:
    """Accuracy first: among the λ whose held-out accuracy is within 2 points of the best one,
    the one with the fewest tokens per correct answer."""
    top = max(r["accuracy"] for r in sweep)
    near = [r for r in sweep if r["accuracy"] >= top - 0.02]
    return float(min(near, key=lambda r: r["tokens_per_correct"] or float("inf"))["lam"])


def oracle(tasks: Sequence[Task], runs: dict[str, list[Outcome]]) -> dict[str, Any]:
    chosen, picked = [], []
    for i in range(len(tasks)):
        right = [m for m in MODES if runs[m][i].score] or list(MODES)
        m = min(right, key=lambda m: tokens(runs[m][i]))
        chosen.append(m)
        picked.append(runs[m][i])
    return cost_of_pass("oracle (cheapest right mode)", tasks, picked, chosen)


COLS = [
    "method",
    "accuracy",
    "tokens_per_task",
    "seconds_per_task",
    "tokens_per_correct",
    "seconds_per_correct",
    "modes",
]


async def a2fm_section(
    backend: Backend, embedder: Embedder, args: argparse.Namespace
) -> dict[str, Any]:
    ctrls = modes(backend)
    train = MixedSuite(split="train", per_kind=args.a2fm_per_kind)
    test = MixedSuite(split="test", per_kind=args.a2fm_per_kind)
    train_runs = await run_modes(train, ctrls, args.concurrency)
    fixed_train = [cost_of_pass(m, train.tasks, o, [m] * len(o)) for m, o in train_runs.items()]
    show("A2FM train split: fixed modes (modes per kind: instant/reasoning/agentic)", fixed_train)
    lams = [float(x) for x in args.a2fm_lams.split(",")]
    sweep = [await cross_validate(train.tasks, train_runs, embedder, lam) for lam in lams]
    show(f"A2FM λ sweep, {FOLDS}-fold CV on the train split", sweep, ["lam", *COLS[1:]])
    lam = pick_lam(sweep)
    policies = {x: await fitted(embedder, x, train.tasks, train_runs) for x in lams}
    policies[lam].save(ROUTER)

    test_runs = await run_modes(test, ctrls, args.concurrency)
    rows = [cost_of_pass(m, test.tasks, o, [m] * len(o)) for m, o in test_runs.items()]
    routers: dict[str, RoutingPolicy] = {
        f"router: learned (λ={lam:g})": policies[lam],
        "router: self-tag": SelfTagPolicy(backend),
    }
    for name, pol in routers.items():
        router = A2FMRouter(
            instant=ctrls["instant"],
            reasoning=ctrls["reasoning"],
            agentic=ctrls["agentic"],
            policy=pol,
        )
        outs = (await run_suite(test, router, concurrency=args.concurrency)).outcomes
        rows.append(cost_of_pass(name, test.tasks, outs, [o.info["mode"] for o in outs]))
    rows.append(oracle(test.tasks, test_runs))
    show("A2FM test split: cost-of-pass (modes per kind: instant/reasoning/agentic)", rows, COLS)
    every_lam = []
    for x, pol in policies.items():
        chosen = await route_all(pol, test.tasks)
        picked = [test_runs[m][i] for i, m in enumerate(chosen)]
        every_lam.append({"lam": x, **cost_of_pass(f"λ={x:g}", test.tasks, picked, chosen)})
    show(
        "A2FM test split: the learned policy at every λ, read off the modes' runs", every_lam, COLS
    )

    fixed = rows[:3]
    best_acc = max(r["accuracy"] for r in fixed)
    cheapest = min(r["tokens_per_correct"] or float("inf") for r in fixed)
    targets = []
    for r in rows[3:5]:
        cop = r["tokens_per_correct"] or float("inf")
        targets.append(
            Target(
                section="a2fm",
                target=f"{r['method']}: tokens per correct below every fixed mode, accuracy "
                "within 2 points of the best mode",
                met=cop < cheapest and r["accuracy"] >= best_acc - 0.02,
                numbers=f"{cop:.0f} tok/correct vs best fixed {cheapest:.0f}; accuracy "
                f"{r['accuracy']:.3f} vs best {best_acc:.3f}",
            ).model_dump()
        )
    return {
        "suite": {"name": "mixed", "per_kind": args.a2fm_per_kind, "kinds": list(KINDS)},
        "modes": {m: repr(c) for m, c in ctrls.items()},
        "train_rows": fixed_train,
        "lambda_sweep": sweep,
        "lambda": lam,
        "test_every_lambda": every_lam,
        "router_file": str(ROUTER),
        "rows": rows,
        "targets": targets,
    }
