"""Train the value model (LoRA + scalar head on SmolLM2, `search/value_model.py`) on the TRAIN
families' Math-Shepherd labels, and measure it on the EVAL families it never saw.

1. Fit: the labels of `value_labels.py --split train` (TRAIN families only). One task in ten of
   each family is held back (by task) as an in-distribution check. The settings are fixed here
   in advance (`SETTINGS`) and were not chosen by looking at any eval number.
2. Save the adapter + head (a few MB) to `search/artifacts/value_smollm2/`, committed, so
   `reward=value` works without this script.
3. Held-out ROC AUC against the hard label on the EVAL families' step prefixes (the labels of
   `value_labels.py --split eval`, which nothing is fit on), on the same prefixes for the value
   model, the old probe head (`benchmarks/results/head_reward.pt`) and the LLM judge; and on
   finished answers (prefixes with no rollouts), plus calibration (ECE) and Pearson r with the
   soft label.
4. Score every sample of the matrix's eval rows as the verifier `value`, so
   `ttc_matrix.py --summarize` reports best-of-N and weighted vote with it beside the others,
   and the seconds it took per task beside the generation's.

    .venv/bin/python benchmarks/value_labels.py --split train      # ~40 min here, resumable
    .venv/bin/python benchmarks/value_labels.py --split eval --tasks 16
    .venv/bin/python benchmarks/train_value.py                     # fit, save, measure
    .venv/bin/python benchmarks/ttc_matrix.py --summarize --chosen-sampling

`--skip-train --compare value,confidence.mean` measures only the named verifiers again (the
judge and the program verifier take most of the time) and merges their numbers into the report,
keeping the others'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from train_head import pearson
from ttc_matrix import EVAL, RESULTS, SEED, TRAIN, _lines, messages
from ttc_stats import ece, roc_auc
from value_labels import LABELS, label_files, read_labels

from agentic.agents.verifiers import program_reward
from agentic.core import ConfigError, Task
from agentic.core.answers import read_answer
from agentic.runtime.suites import load_suite
from backends import TransformersBackend, load_backend
from search.confidence import ConfidenceReward
from search.head_reward import HeadReward, LabelledPrefix
from search.rewards import JudgeReward, WeightedReward
from search.value_model import DEFAULT_PATH, ValueReward, save_adapter, train_value_model

# Fixed before training: LoRA rank 8 (alpha 16) on q/k/v/o, two epochs, batch 16; the usual
# LoRA learning rate, a higher one for the fresh head.
SETTINGS: dict[str, Any] = {
    "rank": 8, "alpha": 16, "epochs": 2, "batch_size": 16, "lr": 3e-4, "head_lr": 1e-3, "seed": 0,
}  # fmt: skip
OLD_HEAD = Path(__file__).parent / "results" / "head_reward.pt"


def quality(scores: list[float], examples: list[LabelledPrefix]) -> dict[str, Any]:
    """AUC on all prefixes (hard label), on unfinished step prefixes, on finished answers."""
    hard = [e.hard > 0.5 for e in examples]
    steps = [i for i, e in enumerate(examples) if e.rollouts > 0]
    final = [i for i, e in enumerate(examples) if e.rollouts == 0]

    def auc_of(idx: list[int]) -> float | None:
        return roc_auc([scores[i] for i in idx], [hard[i] for i in idx]) if idx else None

    return {
        "auc": roc_auc(scores, hard),
        "auc_steps": auc_of(steps),
        "auc_final": auc_of(final),
        "ece": ece(scores, hard),
        "pearson_soft": pearson(scores, [e.soft for e in examples]),
        "n": len(examples),
        "n_steps": len(steps),
        "n_final": len(final),
    }


def split_by_task(
    examples: list[LabelledPrefix],
) -> tuple[list[LabelledPrefix], list[LabelledPrefix]]:
    """Every fifth task of each family (by index) is held back, whole."""

    def held(e: LabelledPrefix) -> bool:
        return int(e.task_id.rsplit("/", 1)[1]) % 5 == 4

    return [e for e in examples if not held(e)], [e for e in examples if held(e)]


def per_family_auc(scores: list[float], examples: list[LabelledPrefix]) -> dict[str, Any]:
    out = {}
    for key, f in EVAL.items():
        idx = [i for i, e in enumerate(examples) if e.task_id.startswith(f.dataset + "/")]
        out[key] = quality([scores[i] for i in idx], [examples[i] for i in idx])["auc"]
    return out


def by_task(examples: list[LabelledPrefix]) -> dict[str, list[LabelledPrefix]]:
    out: dict[str, list[LabelledPrefix]] = {}
    for e in examples:
        out.setdefault(e.task_id, []).append(e)
    return out


async def score_prefixes(
    reward: Any, tasks: dict[str, Task], examples: list[LabelledPrefix]
) -> list[float]:
    """The reward's score of every example, one `score` call per task (a process reward gets
    each prefix as a one-step solution; an outcome reward the texts)."""
    scores: dict[tuple[str, str], float] = {}
    for task_id, group in by_task(examples).items():
        if reward.kind == "outcome":
            got = [[v] for v in await reward.score(tasks[task_id], [e.prefix for e in group])]
        else:
            got = await reward.score(tasks[task_id], [[e.prefix] for e in group])
        for e, [v] in zip(group, got, strict=True):
            scores[(task_id, e.prefix)] = float(v)
    return [scores[(e.task_id, e.prefix)] for e in examples]


def comparison_verifiers(backend: TransformersBackend) -> dict[str, Any]:
    """The verifiers the value model is compared with, on the same prefixes."""
    confidence = ConfidenceReward(backend, statistic="mean", messages=messages)
    program = program_reward(backend, answer_of=read_answer)
    out: dict[str, Any] = {
        "confidence.mean+program": WeightedReward([(1.0, confidence), (1.0, program)]),
        "confidence.mean": confidence,
        "program": program,
        "judge": JudgeReward(backend),
    }
    if OLD_HEAD.exists():
        out["head"] = HeadReward.load(backend, OLD_HEAD, messages=messages)
    return out


async def compare(
    verifiers: dict[str, Any], tasks: dict[str, Task], examples: list[LabelledPrefix]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, v in verifiers.items():
        t0 = time.perf_counter()
        scores = await score_prefixes(v, tasks, examples)
        out[name] = quality(scores, examples) | {
            "seconds": time.perf_counter() - t0,
            "per_family": per_family_auc(scores, examples),
        }
        aucs = {k: out[name][k] for k in ("auc", "auc_steps", "auc_final")}
        print(name, json.dumps(aucs), flush=True)
    return out


def tasks_for(examples: list[LabelledPrefix], families: dict[str, Any]) -> dict[str, Task]:
    """The tasks the examples of `families` were labelled on: the suite's task (its expected
    answer decides how an answer is read, `agentic.core.answers`), except where the question a
    label carries differs from it. Labels made while ransom_note's tasks changed from process to
    process (`agentic.runtime.suites.HASH_ORDERED`) carry such questions: their task is rebuilt
    from that question, without an expected answer, since the suite's belongs to another."""
    out: dict[str, Task] = {}
    for f in families.values():
        mine = [e for e in examples if e.task_id.startswith(f.dataset + "/")]
        if not mine:
            continue
        n = max(int(e.task_id.rsplit("/", 1)[1]) for e in mine) + 1
        suite = {t.id: t for t in load_suite(f.dataset, n=n, seed=SEED, config=f.config).tasks}
        for e in mine:
            question = next(m.content for m in e.messages if m.role == "user")
            task = suite[e.task_id]
            out[e.task_id] = task if task.input == question else Task(id=task.id, input=question)
    return out


async def score_matrix_rows(reward: ValueReward, out: Path) -> dict[str, Any]:
    """The value of every sample in the matrix's eval rows, written into the rows as `value`
    (with `seconds.value`, the scoring wall time per task)."""
    labels, values, generate_s, value_s = [], [], [], []
    for path in sorted(out.glob("*/*.rows.jsonl")):  # noqa: ASYNC240 (a benchmark, one task)
        if path.parent.name not in EVAL:
            continue
        rows = [json.loads(line) for line in _lines(path)]
        f = EVAL[path.parent.name]
        n = max(int(r["task_id"].rsplit("/", 1)[1]) for r in rows) + 1
        tasks = {t.id: t for t in load_suite(f.dataset, n=n, seed=SEED, config=f.config).tasks}
        for r in rows:
            t0 = time.perf_counter()
            got = await reward.score(tasks[r["task_id"]], [[s["text"]] for s in r["samples"]])
            r["seconds"]["value"] = time.perf_counter() - t0
            value_s.append(r["seconds"]["value"])
            generate_s.append(r["seconds"]["generate"])
            for s, [v] in zip(r["samples"], got, strict=True):
                s["value"] = v
                values.append(v)
                labels.append(s["score"] >= 1.0)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)  # whole or not at all: a kill never leaves half a file
        print(f"scored {path.parent.name}/{path.name}", flush=True)
    return {
        "auc": roc_auc(values, labels) if values else None,
        "ece": ece(values, labels) if values else None,
        "samples": len(values),
        "seconds_per_task": {
            "generate": sum(generate_s) / max(1, len(generate_s)),
            "value": sum(value_s) / max(1, len(value_s)),
        },
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    train_files = label_files(args.labels, "train")
    if not train_files:
        raise ConfigError(
            f"no train labels under {args.labels}: run "
            "`python benchmarks/value_labels.py --split train` first"
        )
    examples = [e for p in train_files for e in read_labels(p)]
    fit, held = split_by_task(examples)
    report: dict[str, Any] = {
        "settings": SETTINGS,
        "train_families": sorted({p.stem for p in train_files}),
        "examples": {"fit": len(fit), "held": len(held)},
    }
    torch.set_num_threads(args.threads)
    if not args.skip_train:
        print(f"training on {len(fit)} prefixes ({sum(e.soft for e in fit):.0f} soft-solved)")
        t0 = time.perf_counter()
        model, _, losses = await asyncio.to_thread(train_value_model, args.backend, fit, **SETTINGS)
        report["train_seconds"] = time.perf_counter() - t0
        report["losses"] = losses
        meta = {"base": args.backend, **report, "command": "python benchmarks/train_value.py"}
        save_adapter(model, args.artifact, meta)
    reward = ValueReward.load(args.artifact, messages=messages)  # measure what was saved
    backend = load_backend(args.backend)
    if not isinstance(backend, TransformersBackend):
        raise ConfigError("the comparison verifiers read a local model: use embedded:/hf:")
    verifiers = {"value": reward, **comparison_verifiers(backend)}
    if args.compare:
        unknown = sorted(set(args.compare) - set(verifiers))
        if unknown:
            raise ConfigError(f"--compare: unknown {unknown}; choose from {', '.join(verifiers)}")
        verifiers = {k: v for k, v in verifiers.items() if k in args.compare}
        # the other verifiers' numbers stay as the last full run measured them
        if args.report.exists():
            report = json.loads(args.report.read_text()) | report
    print(f"held-out train tasks: {len(held)} prefixes")
    report["held_train"] = report.get("held_train", {}) | await compare(
        verifiers, tasks_for(examples, TRAIN), held
    )
    aucs = {k: v["auc"] or 0.0 for k, v in report["held_train"].items()}
    report["chosen"] = max(aucs, key=lambda k: aucs[k])
    print(f"chosen on the held-out train tasks: {report['chosen']}", flush=True)
    meta_path = args.artifact / "value.json"
    if "value" in verifiers:
        meta = json.loads(meta_path.read_text()) | {"held_train_auc": report["held_train"]["value"]}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    args.report.write_text(json.dumps(report, indent=2) + "\n")  # a checkpoint
    eval_examples = [e for p in label_files(args.labels, "eval") for e in read_labels(p)]
    if eval_examples:
        print(f"eval families: {len(eval_examples)} prefixes")
        tasks = tasks_for(eval_examples, EVAL)
        report["eval_prefixes"] = report.get("eval_prefixes", {}) | await compare(
            verifiers, tasks, eval_examples
        )
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    await backend.aclose()
    if args.score_rows:
        report["eval_matrix_samples"] = await score_matrix_rows(reward, args.out)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.report}")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="embedded:smollm2", help="the base model (and policy)")
    ap.add_argument("--labels", type=Path, default=LABELS)
    ap.add_argument("--artifact", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--out", type=Path, default=RESULTS, help="the matrix's results")
    ap.add_argument("--report", type=Path, default=RESULTS / "value_model.json")
    ap.add_argument("--skip-train", action="store_true", help="measure the saved artifact")
    ap.add_argument("--no-score-rows", dest="score_rows", action="store_false")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--compare", default="", help="only these verifiers (comma-separated)")
    args = ap.parse_args()
    args.compare = [v for v in args.compare.split(",") if v]
    try:
        asyncio.run(run(args))
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
