"""Does memory help? Accuracy per round for no memory, ACE, and AgentFly case memory.

The stream is reasoning-gym `basic_arithmetic` (`--config`, one of `arithmetic_configs.SUITES`):
a training split drawn with `--train-seed`, a test split with `--test-seed`. Round 0: every
method answers the test split with empty memory. Round r = 1..`--rounds`: each method learns
from one pass over the training split, then answers the test split with its memory frozen
(nothing is learned while testing, so the rounds compare the memory, not the test order).

Methods (`--methods`, comma-separated):
- `none`: `Direct`, greedy, no memory (the same every round: the reference line);
- `ace`: `controllers.ACE` on the backend, learning offline (`ACE.train`, one epoch per round,
  the checker's score as feedback); testing calls the Generator alone (`ACE.answer`);
- `cases-sim` / `cases-q`: `controllers.CaseMemoryAgent` planning for a `ToolAgent` with the
  calculator (`--executor direct` swaps in `Direct`), writing each training task's case back;
  non-parametric retrieval by similarity, or the Q-policy's softmax selection trained online.

`--backend` takes any backend URI, so a stronger model plugs in unchanged. The playbook's size
against its token budget over 500 updates is `benchmarks/playbook_render.py`.

    .venv/bin/python benchmarks/memory_eval.py [--train 10 --test 30 --rounds 3]

Writes `benchmarks/results/memory.json` and prints the tables. The script is not named
memory.py: run as a script, that name would shadow the `memory` package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arithmetic_configs import SUITES
from controllers_common import run_all
from rich.console import Console
from rich.table import Table

from agentic.agents import ToolAgent
from agentic.agents.tools import calculator
from agentic.core import Context, Controller, Outcome, Task, TaskSuite
from agentic.runtime.suites import load_suite
from backends import Backend, load_backend
from controllers import ACE, CaseMemoryAgent, Direct
from memory import CaseBank, CasePolicy, Playbook
from memory.embedders import Embedder, HashingEmbedder, SentenceTransformerEmbedder

RESULTS = Path(__file__).parent / "results" / "memory.json"
METHODS = ("none", "ace", "cases-sim", "cases-q")
console = Console(width=140)


class Frozen:
    """ACE's Generator alone: answers with the playbook as it is, learns nothing."""

    def __init__(self, ace: ACE) -> None:
        self.ace = ace

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        a = await self.ace.answer(task, ctx)
        return Outcome(task_id=task.id, output=a.output, usage=a.usage, error=a.error)


async def scored(
    suite: TaskSuite, controller: Controller, tasks: Sequence[Task], concurrency: int
) -> dict[str, Any]:
    outcomes, seconds = await run_all(controller, tasks, concurrency)
    scores = [await suite.check(t, o.output) for t, o in zip(tasks, outcomes, strict=True)]
    tokens = sum(o.usage.completion_tokens for o in outcomes)
    return {
        "accuracy": sum(scores) / len(scores),
        "tokens_per_task": tokens / len(tasks),
        "errors": sum(1 for o in outcomes if o.error),
        "seconds": round(seconds, 1),
    }


class Method:
    """One row of the table: how it learns from the training split and how it is tested."""

    name: str

    async def learn(self, train: Sequence[Task]) -> None:
        return None

    def tester(self) -> Controller:
        raise NotImplementedError

    async def size(self) -> int:
        return 0


class Both:
    """The checker of whichever split a task comes from (each suite checks only its own)."""

    def __init__(self, train: TaskSuite, test: TaskSuite) -> None:
        self.train, self.test = train, test
        self.system_prompt = test.system_prompt
        self.train_ids = {t.id for t in train.tasks}

    async def check(self, task: Task, output: str) -> float:
        suite = self.train if task.id in self.train_ids else self.test
        return await suite.check(task, output)


class NoMemory(Method):
    def __init__(self, backend: Backend, suite: Both) -> None:
        self.name = "none"
        self.direct = Direct(backend, system_prompt=suite.system_prompt)

    def tester(self) -> Controller:
        return self.direct


class ACEMethod(Method):
    def __init__(self, backend: Backend, suite: Both, playbook: Playbook) -> None:
        self.name = "ace"
        self.ace = ACE(backend, playbook, checker=suite.check, system_prompt=suite.system_prompt)

    async def learn(self, train: Sequence[Task]) -> None:
        await self.ace.train(train, epochs=1)

    def tester(self) -> Controller:
        return Frozen(self.ace)

    async def size(self) -> int:
        return len(self.ace.playbook)


class CasesMethod(Method):
    def __init__(
        self, name: str, backend: Backend, suite: Both, bank: CaseBank, executor: Controller
    ) -> None:
        self.name, self.bank, self.concurrency = name, bank, 8
        selection = "q" if name == "cases-q" else "similarity"
        policy = CasePolicy(bank.dim or 0, seed=0) if selection == "q" else None
        common: dict[str, Any] = {"checker": suite.check, "selection": selection, "policy": policy}
        self.learner = CaseMemoryAgent(backend, executor, bank, **common)
        self.frozen = CaseMemoryAgent(backend, executor, bank, write=False, learn=False, **common)

    async def learn(self, train: Sequence[Task]) -> None:
        await run_all(self.learner, train, self.concurrency)

    def tester(self) -> Controller:
        return self.frozen

    async def size(self) -> int:
        return await self.bank.count()


async def rounds(args: argparse.Namespace, backend: Backend, embedder: Embedder) -> dict[str, Any]:
    config = SUITES[args.config]
    train_suite = load_suite("basic_arithmetic", n=args.train, seed=args.train_seed, config=config)
    suite = load_suite("basic_arithmetic", n=args.test, seed=args.test_seed, config=config)
    train, test = list(train_suite.tasks), list(suite.tasks)
    both = Both(train_suite, suite)
    folder = Path(tempfile.mkdtemp(prefix="memory_eval_"))
    if args.executor == "agent":
        executor: Controller = ToolAgent(
            backend, [calculator], max_steps=4, system_prompt=suite.system_prompt
        )
    else:
        executor = Direct(backend, system_prompt=suite.system_prompt)
    methods: list[Method] = []
    for name in args.methods.split(","):
        if name == "none":
            methods.append(NoMemory(backend, both))
        elif name == "ace":
            playbook = await Playbook.open(folder / "ace.db", embedder=embedder)
            methods.append(ACEMethod(backend, both, playbook))
        elif name in ("cases-sim", "cases-q"):
            bank = CaseBank.open(folder / f"{name}.db", embedder)
            methods.append(CasesMethod(name, backend, both, bank, executor))
        else:
            raise SystemExit(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    rows: list[dict[str, Any]] = []
    for r in range(args.rounds + 1):
        for m in methods:
            learn_s = 0.0
            if r > 0 and m.name != "none":
                started = time.monotonic()
                await m.learn(train)
                learn_s = time.monotonic() - started
            if r > 0 and m.name == "none":
                rows.append({**next(x for x in rows if x["method"] == "none"), "round": r})
                continue
            row = {"method": m.name, "round": r, **await scored(suite, m.tester(), test, 16)}
            row.update(memory=await m.size(), learn_seconds=round(learn_s, 1))
            rows.append(row)
            console.print(row)
    return {"train": len(train), "test": len(test), "rows": rows, "store": str(folder)}


def show(rows: list[dict[str, Any]], rounds_: int) -> None:
    t = Table(title="accuracy per round (test split; memory frozen while testing)")
    t.add_column("method")
    for r in range(rounds_ + 1):
        t.add_column(f"round {r}", justify="right")
    t.add_column("memory", justify="right")
    t.add_column("tokens/task", justify="right")
    for name in dict.fromkeys(x["method"] for x in rows):
        mine = [x for x in rows if x["method"] == name]
        t.add_row(
            name,
            *(f"{x['accuracy']:.3f}" for x in mine),
            str(mine[-1].get("memory", 0)),
            f"{mine[-1]['tokens_per_task']:.0f}",
        )
    console.print(t)


async def main_async(args: argparse.Namespace) -> None:
    backend = load_backend(args.backend)
    embedder: Embedder = (
        SentenceTransformerEmbedder() if args.embedder == "minilm" else HashingEmbedder()
    )
    report: dict[str, Any] = {"args": vars(args)}
    if args.rounds >= 0 and args.methods:
        report["rounds"] = await rounds(args, backend, embedder)
        show(report["rounds"]["rows"], args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    console.print(f"wrote {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="embedded:smollm2")
    ap.add_argument("--config", default="2terms-1digit", choices=list(SUITES))
    ap.add_argument("--train", type=int, default=10)
    ap.add_argument("--test", type=int, default=30)
    ap.add_argument("--train-seed", type=int, default=1)
    ap.add_argument("--test-seed", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--executor", choices=["agent", "direct"], default="agent")
    ap.add_argument("--embedder", choices=["minilm", "hashing"], default="minilm")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
