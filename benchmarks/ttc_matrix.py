"""The test-time-compute matrix: does spending more samples and a verifier beat majority vote, on
task families nobody tuned on?

Protocol (SmolLM2-135M-Instruct, the embedded model, unless `--backend` says otherwise):
- Families are reasoning-gym datasets with easy settings where greedy sits between ~5% and ~70%,
  split **by family**: `TRAIN` families are the only ones used to fit anything (the confidence
  calibration, the sampling defaults, verifier training); `EVAL` families are never used to train
  or tune anything, and every target is read on them. `--families NAME[:k=v,...]` evaluates any
  other reasoning-gym dataset with the same protocol and the shipped verifiers.
- Per task, fixed seeds: one greedy answer, and `--samples` (16) sampled answers with their token
  logprobs. Every verifier scores every sample: `confidence` (DeepConf statistics from the
  samples' own logprobs: tail, lowest_group, mean), `judge` (the policy as an LLM judge),
  `program` (agreement with a program the model writes, run in the sandbox), `head` (the probe
  head trained earlier on basic_arithmetic, `benchmarks/results/head_reward.pt`).
- Every selector reads answers through the suite's `extract`, the same rule the checker grades.
- For N in {1, 2, 4, 8, 16} the 16 samples split into 16/N disjoint groups of N; each group is one
  run of each selector, and accuracy and tokens are averaged over groups: greedy, majority vote
  (self-consistency), oracle pass@N, and per verifier best-of-N, weighted vote, and (confidence)
  DeepConf's filtered vote (top 50% by confidence, then confidence-weighted). Equal-token
  comparisons are read off these curves: a selector's tokens are the N samples' completion tokens
  plus what its verifier generated (the program verifier writes a program per task).
- Verifier quality: ROC AUC of each verifier's score against the checker (solved = score 1) over
  the final answers of the eval families, and expected calibration error (10 bins).
- Cost: wall seconds per task, split into generation and each verifier, measured phase by phase
  over batches of `--concurrency` tasks (so batching is the same for all).

Resumable: each finished task is one line in `<out>/<family>/<sampling>.rows.jsonl`; a rerun skips
the tasks already there. `--summarize` only rebuilds `<out>/summary.json`, the table and the PNG.

    .venv/bin/python benchmarks/ttc_matrix.py --split train   # fitting and defaults only
    .venv/bin/python benchmarks/ttc_matrix.py --split eval    # the held-out numbers
    .venv/bin/python benchmarks/ttc_matrix.py --families 'chain_sum:min_terms=2,max_terms=2'
    .venv/bin/python benchmarks/ttc_matrix.py --summarize

This file is over 400 lines on purpose: the protocol (families, seeds, what is sampled and scored,
how search controllers are run) stays in one place that a reader checks whole; the statistics,
tables and plot are in `ttc_stats.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttc_stats import (
    CALIBRATION,
    CONSOLE,
    at_tokens,
    curves,
    fit_calibration,
    markdown,
    mean_curves,
    plot,
    show,
    verifier_quality,
)

from agentic.core import (
    Budget,
    ConfigError,
    GenerateRequest,
    Message,
    SamplingParams,
    Task,
    TaskSuite,
)
from agentic.runtime.suites import load_suite
from backends import Backend, load_backend
from search.confidence import STATISTICS, generation_confidences, trace_confidence

RESULTS = Path(__file__).parent / "results" / "ttc"


@dataclass(frozen=True)
class Family:
    dataset: str
    config: dict[str, Any]

    @property
    def key(self) -> str:
        if not self.config:
            return self.dataset
        return self.dataset + ":" + ",".join(f"{k}={v}" for k, v in sorted(self.config.items()))


# Chosen by greedy accuracy on 20 probe tasks (seed 1234, not the matrix's seed 0), before any
# verifier or default was looked at: benchmarks/results/ttc/probe.json (made by ttc_probe.py);
# the comments give that greedy accuracy. Families outside ~5-70% there were left
# out (leg_counting, word_sequence_reversal, number_sorting, syllogism, family_relationships,
# base_conversion, word_sorting, isomorphic_strings, number_filtering: 0-2%). Each side mixes
# arithmetic, number theory, counting and string families; the one logic family is held out.
# products (65%) and prime_factorization (30%) were in range too: left out of the eval side only
# for CPU time here (a family of 40 tasks costs ~10 minutes), before anything was run on them.
TRAIN: dict[str, Family] = {
    f.key: f
    for f in (
        Family("basic_arithmetic", {}),  # 2 terms, 1 digit (the suite's preset); probe 40%
        Family("decimal_arithmetic", {"max_terms": 2, "min_num_decimal_places": 1,
                                      "max_num_decimal_places": 1}),  # 10%
        Family("gcd", {"max_value": 20}),  # 30%
        Family("count_primes", {"max_n": 20}),  # 7%
        Family("letter_counting", {"min_words": 3, "max_words": 5}),  # 47%
        Family("letter_jumble", {"min_words": 2, "max_words": 3, "max_word_len": 5}),  # 5%
    )
}  # fmt: skip
# Held out: never used to train, fit or choose anything.
EVAL: dict[str, Family] = {
    f.key: f
    for f in (
        Family("chain_sum", {"min_terms": 3, "max_terms": 3, "max_digits": 1}),  # 5%
        Family("lcm", {"max_value": 10}),  # 45%
        Family("count_bits", {"max_n": 64}),  # 14%
        Family("spell_backward", {"max_word_len": 4}),  # 7%
        Family("ransom_note", {"max_note_length": 3, "max_magazine_length": 8}),  # 60%
    )
}  # fmt: skip
TRAIN_KEYS = frozenset(TRAIN)
assert not TRAIN_KEYS & set(EVAL), "a family is either train or eval, never both"
SEED = 0

# Sampling for the samples, chosen on the train families (docs/search.md, "Verifiers").
# `--choose` picked T=1.0, min_p=0.1 (benchmarks/results/ttc/defaults.json).
DEFAULT_SAMPLING: dict[str, float] = {"temperature": 1.0, "min_p": 0.1, "top_p": 1.0}
# Step search settings, chosen on the train families (docs/search.md, "Verifiers"): 2 steps of 32
# tokens (= the 64 tokens samples get), by PF-8's accuracy on the train families, 8 tasks each:
# 21.9% against 14.6% for 16x4 (the rule's default before) and 12.5% for 8x8. The reward is every
# search's default (agentic/specs/searches.py): the value model, the best ROC AUC on held-out
# train-family prefixes (benchmarks/train_value.py, 0.762). It was confidence.mean+program (the best
# on the train samples' final answers, 0.712) until the value model was trained; the eval search
# runs in docs/search.md name their reward.
DEFAULT_SEARCH: dict[str, Any] = {
    "reward": "value",
    "confidence": "mean",
    "tokens_per_step": 32,
    "max_steps": 2,
    "aggregation": "last",
}


def parse_family(text: str) -> Family:
    """`NAME[:k=v,...]`: values are read as JSON where they parse (numbers, lists), else text."""
    name, _, rest = text.partition(":")
    config: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--families {text!r}: {item!r} is not KEY=VALUE")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return Family(name, config)


def split_of(family: Family) -> str:
    """A family named with `--families` keeps its side of the split (so a run can be split
    across processes by family); any other is the user's own."""
    return "eval" if family.key in EVAL else "train" if family.key in TRAIN else "user"


def sampling_key(p: SamplingParams) -> str:
    return f"t{p.temperature:g}-minp{p.min_p:g}-topp{p.top_p:g}-{p.max_tokens}tok"


def messages(task: Task) -> tuple[Message, ...]:
    return (Message(role="user", content=task.input),)


async def greedy_rows(
    backend: Backend, suite: TaskSuite, tasks: list[Task], max_tokens: int
) -> list[dict[str, Any]]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    gens = await backend.generate(
        [GenerateRequest(messages=messages(t), params=params) for t in tasks]
    )
    return [
        {
            "text": g.text,
            "answer": suite.extract(t, g.text),
            "score": await suite.check(t, g.text),
            "tokens": g.usage.completion_tokens,
        }
        for t, [g] in zip(tasks, gens, strict=True)
    ]


class Verifiers:
    """The verifiers that score every sample, built once per suite. Confidence reads the samples'
    own logprobs; the others are rewards called as a search would call them."""

    def __init__(
        self, backend: Backend, suite: TaskSuite, names: list[str], head: Path | None
    ) -> None:
        self.rewards: dict[str, Any] = {}
        if "judge" in names:
            from search.rewards import JudgeReward

            self.rewards["judge"] = JudgeReward(backend)
        if "head" in names:
            from backends import TransformersBackend
            from search.head_reward import HeadReward

            if head is None or not head.exists():
                raise ConfigError(
                    f"verifier 'head' needs a saved head, {head} is missing; build one with "
                    "`python benchmarks/train_head.py`"
                )
            if not isinstance(backend, TransformersBackend):
                raise ConfigError("verifier 'head' needs a local transformers backend")
            self.rewards["head"] = HeadReward.load(backend, head, messages=messages)
        if "program" in names:
            from agentic.agents.verifiers import program_reward

            self.rewards["program"] = program_reward(backend, answer_of=suite.extract)


async def _metered(coro: Any) -> tuple[Any, int]:
    """What `coro` returns and the tokens it generated (a verifier that writes programs)."""
    with Budget() as meter:
        result = await coro
    return result, meter.spent.completion_tokens


async def sample_rows(
    backend: Backend,
    suite: TaskSuite,
    tasks: list[Task],
    params: SamplingParams,
    verifiers: Verifiers,
) -> tuple[list[list[dict[str, Any]]], dict[str, float]]:
    """Per task, `params.n` samples with their checker score and every verifier's score; and the
    wall seconds of each phase over the whole batch of tasks."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    reqs = [
        GenerateRequest(messages=messages(t), params=params.model_copy(update={"seed": SEED + i}))
        for i, t in enumerate(tasks)
    ]
    gens = await backend.generate(reqs)
    seconds["generate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = [
        [
            {
                "text": g.text,
                "answer": suite.extract(t, g.text),
                "tokens": g.usage.completion_tokens,
                "confidence": confidence_stats(g),
            }
            for g in samples
        ]
        for t, samples in zip(tasks, gens, strict=True)
    ]
    seconds["confidence"] = time.perf_counter() - t0
    for t, task_rows in zip(tasks, rows, strict=True):
        for r in task_rows:
            r["score"] = await suite.check(t, r["text"])
    for name, reward in verifiers.rewards.items():
        t0 = time.perf_counter()
        if reward.kind == "outcome":
            calls = [
                reward.score(t, [r["text"] for r in tr]) for t, tr in zip(tasks, rows, strict=True)
            ]
        else:
            calls = [
                reward.score(t, [[r["text"]] for r in tr])
                for t, tr in zip(tasks, rows, strict=True)
            ]
        results = await asyncio.gather(*(_metered(c) for c in calls))
        seconds[name] = time.perf_counter() - t0
        for tr, (scores, tokens) in zip(rows, results, strict=True):
            for r, sc in zip(tr, scores, strict=True):
                r[name] = float(sc[-1] if isinstance(sc, list) else sc)
            tr[0].setdefault("verifier_tokens", {})[name] = tokens
    return rows, seconds


def confidence_stats(g: Any) -> dict[str, float]:
    c = generation_confidences(g)
    return {s: trace_confidence(c, s) for s in STATISTICS}


async def run_family(
    backend: Backend,
    family: Family,
    split: str,
    args: argparse.Namespace,
    params: SamplingParams,
) -> None:
    suite = load_suite(family.dataset, n=args.tasks, seed=SEED, config=family.config)
    path = args.out / family.key / f"{sampling_key(params)}.rows.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["task_id"] for line in _lines(path)}
    todo = [t for t in suite.tasks if t.id not in done]
    if not todo:
        return
    verifiers = Verifiers(backend, suite, args.verifiers, args.head)
    CONSOLE.print(f"[bold]{family.key}[/] ({split}): {len(todo)} of {len(suite.tasks)} tasks to go")
    for i in range(0, len(todo), args.concurrency):
        batch = todo[i : i + args.concurrency]
        t0 = time.perf_counter()
        greedy = await greedy_rows(backend, suite, batch, params.max_tokens)
        greedy_s = time.perf_counter() - t0
        rows, seconds = await sample_rows(backend, suite, batch, params, verifiers)
        with path.open("a") as f:
            for t, g, r in zip(batch, greedy, rows, strict=True):
                line = {
                    "task_id": t.id,
                    "family": family.key,
                    "split": split,
                    "expected": t.answer,
                    "sampling": {k: getattr(params, k) for k in SAMPLING_FIELDS},
                    "greedy": g,
                    "samples": r,
                    # each phase's wall time over the batch, shared out per task
                    "seconds": {
                        "greedy": greedy_s / len(batch),
                        **{k: v / len(batch) for k, v in seconds.items()},
                    },
                }
                f.write(json.dumps(line) + "\n")
        CONSOLE.print(
            f"  {family.key}: {min(i + args.concurrency, len(todo))}/{len(todo)} "
            f"(generate {seconds['generate']:.0f} s"
            + "".join(f", {k} {v:.0f} s" for k, v in seconds.items() if k != "generate")
            + ")"
        )


# Search controllers by name; each runs with `--search-reward` and the search step settings.
SEARCHES: dict[str, dict[str, Any]] = {
    "pf-4": {"type": "pf", "samples": 4},
    "pf-8": {"type": "pf", "samples": 8},
    "epf-4": {"type": "epf", "samples": 4},
    "epf-8": {"type": "epf", "samples": 8},
    "epf-8-nolookahead": {"type": "epf", "samples": 8, "lookahead": False},
    "beam-8": {"type": "beam", "samples": 8, "width": 2},
    "astar": {"type": "astar", "k": 4},
    "bon-16": {"type": "bon", "samples": 16},
}


async def run_searches(
    backend: Backend, family: Family, split: str, args: argparse.Namespace
) -> None:
    """Each search controller in `args.controllers` on every task of `family`: its answer's
    score, generated tokens (verifier generation included), steps in the answer, rounds and
    resampled rounds (from its `search.round` events), and seconds."""
    from agentic.specs.registry import BuildContext, parse_controller_spec

    suite = load_suite(family.dataset, n=args.tasks, seed=SEED, config=family.config)
    for name in args.controllers:
        spec = parse_controller_spec(
            {
                **SEARCHES[name],
                "reward": args.search_reward,
                "confidence": args.search_confidence,
                "tokens_per_step": args.tokens_per_step,
                "max_steps": args.max_steps,
                "aggregation": args.aggregation,
                "temperature": params_of(args).temperature,
                "min_p": params_of(args).min_p,
            }
        )
        reward = args.search_reward
        tag = f"{name}.{reward.replace('*', 'x').replace('+', '_')}.{search_key(args)}"
        path = args.out / family.key / f"{tag}.search.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        done = {json.loads(line)["task_id"] for line in _lines(path)}
        todo = [t for t in suite.tasks if t.id not in done]
        if not todo:
            continue
        controller: Any = BuildContext(backend, suite).build(spec)
        CONSOLE.print(f"[bold]{family.key}[/] ({split}) {tag}: {len(todo)} tasks to go")

        for i in range(0, len(todo), args.concurrency):
            batch = todo[i : i + args.concurrency]
            info = {"family": family.key, "split": split, "controller": tag}
            lines = await asyncio.gather(*(search_one(controller, suite, t, info) for t in batch))
            with path.open("a") as f:
                for line in lines:
                    f.write(json.dumps(line) + "\n")
            CONSOLE.print(f"  {tag}: {min(i + args.concurrency, len(todo))}/{len(todo)}")


async def search_one(
    controller: Any, suite: TaskSuite, task: Task, info: dict[str, str]
) -> dict[str, Any]:
    from agentic.core import Tracer

    rounds: list[dict[str, Any]] = []

    def on_event(e: Any) -> None:
        if e.type == "search.round":
            rounds.append(e.payload)

    t0 = time.perf_counter()
    with Tracer([on_event]).activate():
        result = await controller.search(task)
    nodes = [n for n, d in result.tree.graph.nodes(data=True) if d["text"] == result.answer]
    return {
        "task_id": task.id,
        **info,
        "answer": suite.extract(task, result.answer),
        "score": await suite.check(task, result.answer),
        "tokens": result.usage.completion_tokens,
        "reward_calls": result.usage.reward_calls,
        "steps": max((len(nx_ancestors(result.tree.graph, n)) for n in nodes), default=0),
        "rounds": len(rounds),
        "resampled": sum(1 for r in rounds if r.get("resampled")),
        "seconds": time.perf_counter() - t0,
    }


def nx_ancestors(graph: Any, node: int) -> set[int]:
    """The node's ancestors except the root (node 0, the empty solution): its step count - 1."""
    import networkx as nx

    return set(nx.ancestors(graph, node)) - {0} | {node}


def search_key(args: argparse.Namespace) -> str:
    key = f"{sampling_key(params_of(args))}-{args.tokens_per_step}x{args.max_steps}"
    # named only when not the default, so the rows recorded before the option keep their files
    agg = args.aggregation
    return key if agg == DEFAULT_SEARCH["aggregation"] else f"{key}-{agg}"


def params_of(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        min_p=args.min_p,
        top_p=args.top_p,
        n=args.samples,
        logprobs=5,
    )


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    # a line cut by a kill is dropped, and its task runs again
    return [ln for ln in path.read_text().splitlines() if ln.endswith("}")]


def load_rows(out: Path, params_key: str) -> dict[str, list[dict[str, Any]]]:
    """family key -> its task rows, for every family with rows at these sampling settings."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob(f"*/{params_key}.rows.jsonl")):
        rows = [json.loads(line) for line in _lines(path)]
        if rows:
            found[rows[0]["family"]] = rows
    return found


def summarize(args: argparse.Namespace, params: SamplingParams) -> dict[str, Any]:
    key = sampling_key(params)
    rows = load_rows(args.out, key)
    if not rows:
        raise ConfigError(f"no rows under {args.out} for sampling {key}: run the matrix first")
    calib_path = args.out / f"calibration.{key}.json"
    train_rows = [r for fam in rows.values() for r in fam if r["split"] == "train"]
    if train_rows:
        CALIBRATION.update(fit_calibration(train_rows))
        calib_path.write_text(json.dumps({"sampling": key, "fits": CALIBRATION}, indent=2) + "\n")
    summary: dict[str, Any] = {"sampling": key, "calibration": CALIBRATION, "splits": {}}
    for split in ("train", "eval", "user"):
        fams = {f: r for f, r in rows.items() if r[0]["split"] == split}
        if not fams:
            continue
        per_family = {f: curves(r) for f, r in fams.items()}
        flat = [row for r in fams.values() for row in r]
        seconds: dict[str, float] = defaultdict(float)
        for row in flat:
            for k, v in row["seconds"].items():
                seconds[k] += v / len(flat)
        summary["splits"][split] = {
            "families": {f: len(r) for f, r in fams.items()},
            "mean": mean_curves(per_family),
            "per_family": per_family,
            "verifiers": verifier_quality(flat),
            "verifiers_per_family": {f: verifier_quality(r) for f, r in fams.items()},
            "seconds_per_task": dict(seconds),
        }
    for split, block in summary["splits"].items():
        fams = {f: r for f, r in rows.items() if r[0]["split"] == split}
        block["searches"] = search_summary(args.out, split, fams)
    (args.out / f"summary.{key}.json").write_text(json.dumps(summary, indent=2) + "\n")
    show(summary)
    plot(summary, args.out / f"curves.{key}.png")
    (args.out / f"table.{key}.md").write_text(markdown(summary))
    return summary


SAMPLING_FIELDS = ("temperature", "min_p", "top_p", "max_tokens")


def choose_sampling(out: Path) -> dict[str, Any]:
    """The pre-registered rule for the sampling defaults: among the settings run on every train
    family, the best mean majority vote at N=8 (it needs both single-sample accuracy and
    diversity); greedy, N=1 and pass@8 are kept beside it. Eval rows are never read."""
    by_key: dict[str, dict[str, Any]] = {}
    for path in sorted(out.glob("*/*.rows.jsonl")):
        rows = [json.loads(line) for line in _lines(path)]
        if not rows or rows[0]["split"] != "train":
            continue
        key = path.name.removesuffix(".rows.jsonl")
        entry = by_key.setdefault(key, {"sampling": rows[0]["sampling"], "families": {}})
        entry["families"][rows[0]["family"]] = curves(rows)
    complete = {k: v for k, v in by_key.items() if set(v["families"]) == set(TRAIN)}
    if not complete:
        raise ConfigError(f"no sampling setting under {out} has rows for every train family")
    table = {}
    for key, v in complete.items():
        m = mean_curves(v["families"])
        table[key] = {
            "sampling": v["sampling"],
            "vote@8": m["vote"][8][0],
            "sample@1": m["vote"][1][0],
            "pass@8": m["oracle"][8][0],
            "greedy": m["greedy"][1][0],
        }
    best = max(table, key=lambda k: table[k]["vote@8"])
    chosen = {"chosen": best, "sampling": table[best]["sampling"], "train": table}
    (out / "defaults.json").write_text(json.dumps(chosen, indent=2) + "\n")
    for key, row in table.items():
        CONSOLE.print(
            f"{'*' if key == best else ' '} {key}: vote@8 {row['vote@8']:.1%}, "
            f"sample@1 {row['sample@1']:.1%}, pass@8 {row['pass@8']:.1%}"
        )
    return chosen


def search_summary(
    out: Path, split: str, sample_rows: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Per search configuration, the mean over the families that have all their tasks: accuracy,
    tokens, steps, resampling rate, seconds, and majority vote at the same tokens."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    for path in out.glob("*/*.search.jsonl"):
        rows = [json.loads(line) for line in _lines(path)]
        if rows and rows[0]["split"] == split and rows[0]["family"] in sample_rows:
            found[rows[0]["controller"]][rows[0]["family"]] = rows
    result: dict[str, Any] = {}
    for tag, fams in sorted(found.items()):
        per: dict[str, dict[str, float]] = {}
        for fam, rows in fams.items():
            k = len(rows)
            # the baseline on the very tasks the search ran on
            ids = {r["task_id"] for r in rows}
            base = curves([r for r in sample_rows[fam] if r["task_id"] in ids])
            tokens = sum(r["tokens"] for r in rows) / k
            rounds = sum(r["rounds"] for r in rows)
            per[fam] = {
                "tasks": k,
                "accuracy": sum(r["score"] for r in rows) / k,
                "tokens": tokens,
                "steps": sum(r["steps"] for r in rows) / k,
                "resampling_rate": sum(r["resampled"] for r in rows) / rounds if rounds else 0.0,
                "seconds": sum(r["seconds"] for r in rows) / k,
                "vote_at_tokens": at_tokens(base["vote"], tokens),
                "vote@8": base["vote"][8][0],
                "oracle@8": base["oracle"][8][0],
                "greedy": base["greedy"][1][0],
            }
        keys = next(iter(per.values())).keys()
        result[tag] = {
            "families": per,
            "mean": {key: sum(p[key] for p in per.values()) / len(per) for key in keys},
            "complete": len(per) == len(sample_rows),
        }
    return result


async def run(args: argparse.Namespace, params: SamplingParams) -> None:
    families: list[tuple[Family, str]] = []
    if args.families:
        families = [(f, split_of(f)) for f in map(parse_family, args.families)]
    else:
        if args.split in ("train", "all"):
            families += [(f, "train") for f in TRAIN.values()]
        if args.split in ("eval", "all"):
            families += [(f, "eval") for f in EVAL.values()]
    for family, _ in families:  # fail before loading the model on a bad name or key
        load_suite(family.dataset, n=1, seed=SEED, config=family.config)
    backend = load_backend(args.backend)
    try:
        for family, split in families:
            if not args.controllers:
                await run_family(backend, family, split, args, params)
            else:
                await run_searches(backend, family, split, args)
    finally:
        await backend.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="embedded:smollm2")
    ap.add_argument("--split", choices=("train", "eval", "all"), default="all")
    ap.add_argument("--families", nargs="*", help="NAME[:k=v,...]: your own families instead")
    ap.add_argument("--tasks", type=int, default=40, help="tasks per family")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=DEFAULT_SAMPLING["temperature"])
    ap.add_argument("--min-p", type=float, default=DEFAULT_SAMPLING["min_p"])
    ap.add_argument("--top-p", type=float, default=DEFAULT_SAMPLING["top_p"])
    ap.add_argument(
        "--verifiers", default="judge,program", help="besides confidence: judge,head,program"
    )
    ap.add_argument(
        "--head", type=Path, default=Path(__file__).parent / "results" / "head_reward.pt"
    )
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument(
        "--controllers",
        default="",
        help=f"run these search controllers instead of sampling: {', '.join(SEARCHES)}",
    )
    ap.add_argument("--search-reward", default=DEFAULT_SEARCH["reward"])
    ap.add_argument("--search-confidence", default=DEFAULT_SEARCH["confidence"])
    ap.add_argument("--tokens-per-step", type=int, default=DEFAULT_SEARCH["tokens_per_step"])
    ap.add_argument("--max-steps", type=int, default=DEFAULT_SEARCH["max_steps"])
    ap.add_argument(
        "--aggregation",
        choices=("last", "min", "prod", "mean"),
        default=DEFAULT_SEARCH["aggregation"],
        help="how a search folds a candidate's step scores",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--summarize", action="store_true")
    ap.add_argument(
        "--choose",
        action="store_true",
        help="pick the sampling defaults from the train rows (writes <out>/defaults.json)",
    )
    ap.add_argument(
        "--chosen-sampling",
        action="store_true",
        help="sample with <out>/defaults.json's settings instead of the flags",
    )
    args = ap.parse_args()
    args.verifiers = [v for v in args.verifiers.split(",") if v]
    args.controllers = [c for c in args.controllers.split(",") if c]
    try:
        unknown = sorted(set(args.verifiers) - {"judge", "head", "program"})
        if unknown:
            raise ConfigError(f"--verifiers: unknown {unknown}; choose judge, head, program")
        bad = [c for c in args.controllers if c not in SEARCHES]
        if bad:
            raise ConfigError(f"--controllers: unknown {bad}; choose from {', '.join(SEARCHES)}")
        if args.choose:
            choose_sampling(args.out)
            return
        if args.chosen_sampling:
            path = args.out / "defaults.json"
            if not path.exists():
                raise ConfigError(f"{path} is missing: run with --choose after the train runs")
            for k, v in json.loads(path.read_text())["sampling"].items():
                setattr(args, k, v)
        params = params_of(args)
        if not args.summarize:
            asyncio.run(run(args, params))
        summarize(args, params)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
