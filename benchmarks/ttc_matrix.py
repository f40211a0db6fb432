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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentic.core import (
    Budget,
    ConfigError,
    GenerateRequest,
    Message,
    SamplingParams,
    Task,
    TaskSuite,
)
from agentic.suites import load_suite
from backends import Backend, load_backend
from search.confidence import STATISTICS, generation_confidences, trace_confidence

RESULTS = Path(__file__).parent / "results" / "ttc"
NS = (1, 2, 4, 8, 16)
console = Console()


@dataclass(frozen=True)
class Family:
    dataset: str
    config: dict[str, Any]

    @property
    def key(self) -> str:
        if not self.config:
            return self.dataset
        return self.dataset + ":" + ",".join(f"{k}={v}" for k, v in sorted(self.config.items()))


# Chosen by greedy accuracy on 20 probe tasks (seed 1234, not the matrix's seeds), before any
# verifier or default was looked at: see benchmarks/results/ttc/probe.json. Split so that each
# side mixes arithmetic, counting, string and logic families.
TRAIN: dict[str, Family] = {}
EVAL: dict[str, Family] = {}
SEED = 0

# Sampling for the samples, chosen on the train families (see the README's "Verifiers").
DEFAULT_SAMPLING: dict[str, float] = {"temperature": 0.7, "min_p": 0.0, "top_p": 1.0}


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
            from agentic.verifiers import program_reward

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
    console.print(f"[bold]{family.key}[/] ({split}): {len(todo)} of {len(suite.tasks)} tasks to go")
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
                    "greedy": g,
                    "samples": r,
                    # each phase's wall time over the batch, shared out per task
                    "seconds": {
                        "greedy": greedy_s / len(batch),
                        **{k: v / len(batch) for k, v in seconds.items()},
                    },
                }
                f.write(json.dumps(line) + "\n")
        console.print(
            f"  {family.key}: {min(i + args.concurrency, len(todo))}/{len(todo)} "
            f"(generate {seconds['generate']:.0f} s"
            + "".join(f", {k} {v:.0f} s" for k, v in seconds.items() if k != "generate")
            + ")"
        )


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    # a line cut by a kill is dropped, and its task runs again
    return [ln for ln in path.read_text().splitlines() if ln.endswith("}")]


# ---- selection: every selector picks one sample of a group; its score is that sample's score


def vote(group: list[dict[str, Any]], weight: str | None = None) -> dict[str, Any]:
    """Majority vote over extracted answers (weighted by a verifier's score when `weight`);
    ties go to the answer seen first; the answer's best-weighted member is the pick."""
    totals: dict[str, float] = defaultdict(float)
    for r in group:
        totals[r["answer"]] += 1.0 if weight is None else _weight(r, weight)
    best = max(totals.values())
    winner = next(r["answer"] for r in group if totals[r["answer"]] == best)
    members = [r for r in group if r["answer"] == winner]
    return members[0] if weight is None else max(members, key=lambda r: _weight(r, weight))


def _weight(r: dict[str, Any], name: str) -> float:
    if name.startswith("confidence."):
        return calibrated(r["confidence"][name.split(".", 1)[1]], name)
    return float(r[name])


# Logistic calibration of each confidence statistic, fitted on the train families only
# (`--fit`); until fitted, the identity-like default (σ(C)) keeps the ordering.
CALIBRATION: dict[str, tuple[float, float]] = {}


def calibrated(raw: float, name: str) -> float:
    center, scale = CALIBRATION.get(name, (0.0, 1.0))
    z = (raw - center) / scale
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def selectors(verifiers: list[str]) -> dict[str, Any]:
    """name -> function(group) -> the picked sample."""
    out: dict[str, Any] = {
        "vote": vote,
        "oracle": lambda g: max(g, key=lambda r: r["score"]),
    }
    for v in verifiers:
        out[f"bon({v})"] = lambda g, v=v: max(g, key=lambda r: _weight(r, v))
        out[f"wvote({v})"] = lambda g, v=v: vote(g, v)
        if v.startswith("confidence."):
            # DeepConf: keep the most confident half, then the confidence-weighted vote
            out[f"filter50({v})"] = lambda g, v=v: vote(
                sorted(g, key=lambda r: -_weight(r, v))[: max(1, len(g) // 2)], v
            )
    return out


def verifier_names(rows: list[dict[str, Any]]) -> list[str]:
    first = rows[0]["samples"][0]
    names = [f"confidence.{s}" for s in first["confidence"]]
    return names + [k for k in ("judge", "head", "program") if k in first]


def curves(rows: list[dict[str, Any]]) -> dict[str, dict[int, tuple[float, float]]]:
    """selector -> N -> (accuracy, generated tokens per task), over disjoint groups of N."""
    names = verifier_names(rows)
    sel = selectors(names)
    acc: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        samples = row["samples"]
        extra = samples[0].get("verifier_tokens", {})
        for n in NS:
            if n > len(samples):
                continue
            for start in range(0, len(samples) - n + 1, n):
                group = samples[start : start + n]
                tokens = sum(r["tokens"] for r in group)
                for name, pick in sel.items():
                    v = name[name.find("(") + 1 : -1] if "(" in name else ""
                    # a verifier that generates (programs) pays its tokens once per task
                    acc[name][n].append((pick(group)["score"], tokens + extra.get(v, 0)))
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for name, by_n in acc.items():
        out[name] = {
            n: (sum(a for a, _ in xs) / len(xs), sum(t for _, t in xs) / len(xs))
            for n, xs in by_n.items()
        }
    g = [r["greedy"] for r in rows]
    out["greedy"] = {1: (sum(x["score"] for x in g) / len(g), sum(x["tokens"] for x in g) / len(g))}
    return out


def roc_auc(scores: list[float], labels: list[bool]) -> float | None:
    """Probability that a solved sample outscores an unsolved one (ties count half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    # average ranks over ties (Mann-Whitney U)
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg = (i + j + 1) / 2
        rank_sum += avg * sum(1 for k in range(i, j) if ranked[k][1])
        i = j
    u = rank_sum - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


def ece(probs: list[float], labels: list[bool], bins: int = 10) -> float:
    """Expected calibration error: the sample-weighted |accuracy - mean score| over bins."""
    total, err = len(probs), 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, p in enumerate(probs) if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if idx:
            acc = sum(labels[i] for i in idx) / len(idx)
            conf = sum(probs[i] for i in idx) / len(idx)
            err += len(idx) / total * abs(acc - conf)
    return err


def verifier_quality(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    samples = [r for row in rows for r in row["samples"]]
    labels = [r["score"] >= 1.0 for r in samples]
    out: dict[str, dict[str, float | None]] = {}
    for v in verifier_names(rows):
        scores = [_weight(r, v) for r in samples]
        out[v] = {"auc": roc_auc(scores, labels), "ece": ece(scores, labels)}
    return out


def fit_calibration(rows: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per confidence statistic, the logistic fit P(solved) = σ((C - center) / scale) by a few
    hundred steps of gradient descent on the log loss (two parameters: no library needed)."""
    samples = [r for row in rows for r in row["samples"]]
    labels = [1.0 if r["score"] >= 1.0 else 0.0 for r in samples]
    fits = {}
    for stat in STATISTICS:
        xs = [r["confidence"][stat] for r in samples]
        mean = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs)) or 1.0
        a, b = 0.0, 0.0  # logit = a * z + b with z standardised
        for _ in range(2000):
            ga = gb = 0.0
            for x, y in zip(xs, labels, strict=True):
                z = (x - mean) / sd
                p = 1.0 / (1.0 + math.exp(-(a * z + b)))
                ga += (p - y) * z
                gb += p - y
            a -= 0.5 * ga / len(xs)
            b -= 0.5 * gb / len(xs)
        if a <= 1e-6:  # no positive relation: keep the ordering, flat scale
            a = 1e-6
        # a*z + b = (x - center) / scale
        scale = sd / a
        center = mean - b * scale
        fits[f"confidence.{stat}"] = (center, scale)
    return fits


def load_rows(out: Path, params_key: str) -> dict[str, list[dict[str, Any]]]:
    """family key -> its task rows, for every family with rows at these sampling settings."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob(f"*/{params_key}.rows.jsonl")):
        rows = [json.loads(line) for line in _lines(path)]
        if rows:
            found[rows[0]["family"]] = rows
    return found


def mean_curves(
    per_family: dict[str, dict[str, dict[int, tuple[float, float]]]],
) -> dict[str, dict[int, tuple[float, float]]]:
    """The unweighted mean over families (each family counts once, whatever its size)."""
    out: dict[str, dict[int, tuple[float, float]]] = {}
    names = set.intersection(*(set(c) for c in per_family.values()))
    for name in names:
        ns = set.intersection(*(set(c[name]) for c in per_family.values()))
        out[name] = {
            n: (
                sum(c[name][n][0] for c in per_family.values()) / len(per_family),
                sum(c[name][n][1] for c in per_family.values()) / len(per_family),
            )
            for n in sorted(ns)
        }
    return out


def summarize(args: argparse.Namespace, params: SamplingParams) -> dict[str, Any]:
    key = sampling_key(params)
    rows = load_rows(args.out, key)
    if not rows:
        raise ConfigError(f"no rows under {args.out} for sampling {key}: run the matrix first")
    calib_path = args.out / "calibration.json"
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
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    show(summary)
    plot(summary, args.out / "curves.png")
    return summary


def show(summary: dict[str, Any]) -> None:
    for split, s in summary["splits"].items():
        table = Table(title=f"{split} families ({len(s['families'])}), mean over families: "
                      "accuracy (generated tokens per task)")  # fmt: skip
        table.add_column("selector")
        for n in NS:
            table.add_column(f"N={n}", justify="right")
        for name, by_n in sorted(s["mean"].items(), key=lambda kv: kv[0]):
            cells = [f"{by_n[n][0]:.1%} ({by_n[n][1]:.0f})" if n in by_n else "" for n in NS]
            table.add_row(name, *cells)
        console.print(table)
        q = Table(title=f"{split}: verifiers on final answers (pooled)")
        q.add_column("verifier")
        q.add_column("ROC AUC", justify="right")
        q.add_column("ECE", justify="right")
        for v, m in s["verifiers"].items():
            auc = m["auc"]
            q.add_row(v, "n/a" if auc is None else f"{auc:.3f}", f"{m['ece']:.3f}")
        console.print(q)
        console.print(
            "seconds per task: "
            + ", ".join(f"{k} {v:.2f}" for k, v in s["seconds_per_task"].items())
        )


def plot(summary: dict[str, Any], out: Path) -> None:
    from matplotlib.figure import Figure

    splits = list(summary["splits"].items())
    fig = Figure(figsize=(7 * len(splits), 5.5), dpi=110, layout="constrained")
    for i, (split, s) in enumerate(splits):
        ax = fig.add_subplot(1, len(splits), i + 1)
        mean = s["mean"]
        shown = ["greedy", "vote", "oracle"] + [
            k for k in sorted(mean) if k.startswith(("bon(", "wvote(", "filter50("))
        ]
        for name in shown:
            if name not in mean:
                continue
            pts = sorted(mean[name].items(), key=lambda kv: int(kv[0]))
            style = "--" if name in ("oracle",) else "-"
            ax.plot([p[1][1] for p in pts], [p[1][0] for p in pts], style, marker="o",
                    markersize=4, label=name)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("generated tokens per task (log)")
        ax.set_ylabel("accuracy (mean over families)")
        ax.set_title(f"{split} families: {', '.join(s['families'])}", fontsize=8, wrap=True)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.savefig(out)


async def run(args: argparse.Namespace, params: SamplingParams) -> None:
    families: list[tuple[Family, str]] = []
    if args.families:
        families = [(parse_family(f), "user") for f in args.families]
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
            await run_family(backend, family, split, args, params)
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
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--summarize", action="store_true")
    args = ap.parse_args()
    args.verifiers = [v for v in args.verifiers.split(",") if v]
    unknown = set(args.verifiers) - {"judge", "head", "program"}
    try:
        if unknown:
            raise ConfigError(
                f"--verifiers: unknown {sorted(unknown)}; choose judge, head, program"
            )
        params = SamplingParams(
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            min_p=args.min_p,
            top_p=args.top_p,
            n=args.samples,
            logprobs=5,
        )
        if not args.summarize:
            asyncio.run(run(args, params))
        summarize(args, params)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
