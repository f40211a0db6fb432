"""Train a Math-Shepherd-style process reward head on SmolLM2-135M's hidden states.

Labels come from the policy itself (no annotation). Tasks are `--tasks` per configuration of
`arithmetic_configs.SUITES` (the search benchmark's), drawn with seeds the benchmark does not use
(100, 101, 102). Per task, `--samples` solutions are sampled step by step, with the chat the
search sees (the suite's system prompt; `tokens_per_step=32, max_steps=4, temperature=0.8`);
every unfinished step prefix is rolled out `--rollouts` times to the end and checked with the
suite's checker (hard label: any rollout correct; soft label: fraction correct); a finished
answer is checked directly. Tasks are split 80/20 (by task, so no prefix of a held-out task is
seen in training); the head is fit on the training prefixes' soft labels and reported on both
splits: accuracy of the thresholded head (p > 0.5) against the hard label (beside the
majority-class accuracy), ROC AUC against the hard label, and Pearson correlation with the soft
label.

    .venv/bin/python benchmarks/train_head.py [--tasks 40] [--rollouts 4] [--layer -1]

Prints a table, writes benchmarks/results/train_head.json and saves the head to
benchmarks/results/head_reward.pt (+ head_reward.pt.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import random
import time
from pathlib import Path
from typing import Any

import torch
from arithmetic_configs import SUITES
from rich.console import Console
from rich.table import Table

from agentic.core import TaskSuite
from agentic.runtime.suites import load_suite
from backends import TransformersBackend, load_backend
from search.base import StepGenerator
from search.head_reward import HeadReward, LabelledPrefix, collect_labels, train_head
from search.rewards import JudgeReward

RESULTS = Path(__file__).parent / "results"


def auc(scores: list[float], labels: list[float]) -> float | None:
    """P(score of a positive > score of a negative), ties count half; None with one class."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y > 0.5]
    neg = [s for s, y in zip(scores, labels, strict=True) if y <= 0.5]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    return None if sx == 0 or sy == 0 else sxy / (sx * sy)


def evaluate(
    reward: HeadReward, examples: list[LabelledPrefix], feats: torch.Tensor
) -> dict[str, Any]:
    return metrics(reward.predict(feats) if examples else [], examples)


def metrics(probs: list[float], examples: list[LabelledPrefix]) -> dict[str, Any]:
    """How well `probs` (one per example) predict the examples' labels."""
    if not examples:
        return {"prefixes": 0}
    hard = [e.hard for e in examples]
    positive = sum(hard) / len(hard)
    return {
        "prefixes": len(examples),
        "tasks": len({e.task_id for e in examples}),
        "positive_rate": positive,
        "accuracy": sum((p > 0.5) == (y > 0.5) for p, y in zip(probs, hard, strict=True))
        / len(hard),
        "majority_accuracy": max(positive, 1 - positive),
        "auc": auc(probs, hard),
        "pearson_soft": pearson(probs, [e.soft for e in examples]),
        "mean_p": sum(probs) / len(probs),
    }


def read_labels(path: Path) -> list[LabelledPrefix]:
    lines = path.read_text().splitlines()
    return [LabelledPrefix.model_validate_json(ln) for ln in lines if ln.strip()]


def write_labels(path: Path, labels: list[LabelledPrefix]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(e.model_dump_json() + "\n" for e in labels))


async def judge_baseline(
    backend: TransformersBackend, suites: list[TaskSuite], examples: list[LabelledPrefix]
) -> dict[str, Any]:
    """The same metrics for the LLM judge (`JudgeReward` on the same model), the PRM the head
    is meant to beat."""
    if not examples:
        return {"prefixes": 0}
    tasks = {t.id: t for s in suites for t in s.tasks}
    judge = JudgeReward(backend)
    scored = await asyncio.gather(*(judge.score(tasks[e.task_id], [[e.prefix]]) for e in examples))
    return metrics([sc[0][0] for sc in scored], examples)


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.monotonic()
    backend = load_backend("embedded:smollm2")
    assert isinstance(backend, TransformersBackend)
    # one suite per configuration, each with its own seed so task ids never collide
    suites = [
        load_suite("basic_arithmetic", n=args.tasks, seed=args.seed + i, config=SUITES[name])
        for i, name in enumerate(args.configs.split(","))
    ]
    steps = StepGenerator(
        backend,
        tokens_per_step=args.tokens_per_step,
        max_steps=args.max_steps,
        temperature=args.temperature,
        system_prompt=suites[0].system_prompt,  # as the search benchmark's controllers see it
    )
    t1 = time.monotonic()
    if args.labels_in is not None:
        labels = read_labels(Path(args.labels_in))
    else:
        per_suite = await asyncio.gather(
            *(
                collect_labels(
                    backend, s, steps, rollouts=args.rollouts, samples=args.samples, seed=args.seed
                )
                for s in suites
            )
        )
        labels = [e for part in per_suite for e in part]
        write_labels(RESULTS / "head_labels.jsonl", labels)
    t2 = time.monotonic()

    ids = [t.id for s in suites for t in s.tasks]
    random.Random(args.seed).shuffle(ids)
    cut = max(1, min(len(ids) - 1, round(0.8 * len(ids))))
    train_ids = set(ids[:cut])
    is_train = torch.tensor([e.task_id in train_ids for e in labels])
    train = [e for e in labels if e.task_id in train_ids]
    held = [e for e in labels if e.task_id not in train_ids]
    if not train:
        raise SystemExit("no labelled prefixes in the training split: use more --tasks")

    # every prefix is encoded once: the same features train the head and evaluate it
    probe = HeadReward(backend, layer=args.layer, messages=steps.messages)
    feats, _ = await probe.features([(e.messages, e.prefix) for e in labels])
    reward = await train_head(
        backend,
        train,
        layer=args.layer,
        epochs=args.epochs,
        lr=args.lr,
        l2=args.l2,
        mlp=args.mlp,
        messages=steps.messages,
        features=feats[is_train],
        seed=args.seed,
    )
    t3 = time.monotonic()
    splits = {
        "train": evaluate(reward, train, feats[is_train]),
        "held_out": evaluate(reward, held, feats[~is_train]),
        "held_out, judge": await judge_baseline(backend, suites, held),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    reward.save(RESULTS / "head_reward.pt")
    return {
        "benchmark": "train_head",
        "model": backend.name,
        "suites": [s.config() for s in suites],
        "config": vars(args),
        "labels": {
            "prefixes": len(labels),
            "rolled_out": sum(e.rollouts > 0 for e in labels),
            "finished": sum(e.rollouts == 0 for e in labels),
            "hard_mean": sum(e.hard for e in labels) / max(1, len(labels)),
            "soft_mean": sum(e.soft for e in labels) / max(1, len(labels)),
        },
        "train_loss": {"first": reward.train_losses[0], "last": reward.train_losses[-1]},
        "splits": splits,
        "seconds": {
            "load": t1 - t0,
            "collect_labels": t2 - t1,
            "features_and_train": t3 - t2,
            "total": time.monotonic() - t0,
        },
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=24, help="tasks per configuration")
    p.add_argument("--configs", default=",".join(SUITES), help="of arithmetic_configs.SUITES")
    p.add_argument("--seed", type=int, default=100, help="not the benchmark's seed (0)")
    p.add_argument("--rollouts", type=int, default=4)
    p.add_argument("--samples", type=int, default=2, help="solutions sampled per task")
    p.add_argument("--tokens-per-step", type=int, default=32)
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--layer", type=int, default=-1)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--l2", type=float, default=1e-2)
    p.add_argument("--mlp", type=int, default=None, help="hidden width of an MLP head")
    p.add_argument(
        "--labels-in",
        default=None,
        help="train on labels saved by an earlier run (results/head_labels.jsonl), not new ones",
    )
    args = p.parse_args()

    result = asyncio.run(run(args))
    lab, sec = result["labels"], result["seconds"]
    table = Table(
        title=f"HeadReward on {result['model']}, basic_arithmetic, {args.tasks} tasks, "
        f"layer {args.layer}: {lab['prefixes']} prefixes ({lab['rolled_out']} rolled out "
        f"x{args.rollouts}), hard mean {lab['hard_mean']:.3f}"
    )
    cols = {
        "tasks": "tasks",
        "prefixes": "prefixes",
        "positive_rate": "hard=1",
        "accuracy": "acc",
        "majority_accuracy": "majority",
        "auc": "AUC",
        "pearson_soft": "r(soft)",
        "mean_p": "mean p",
    }
    table.add_column("split")
    for title in cols.values():
        table.add_column(title, justify="right")
    for name, m in result["splits"].items():
        table.add_row(name, *(fmt(m.get(c)) for c in cols))
    console = Console(width=120)  # a pipe gets 80 columns, too narrow for the table
    console.print(table)
    loss = result["train_loss"]
    console.print(
        f"train BCE {loss['first']:.4f} -> {loss['last']:.4f}; seconds: load {sec['load']:.1f}, "
        f"labels {sec['collect_labels']:.1f}, features+train {sec['features_and_train']:.1f}, "
        f"total {sec['total']:.1f}"
    )
    out = RESULTS / "train_head.json"
    out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {out} and {RESULTS / 'head_reward.pt'}")


if __name__ == "__main__":
    main()
