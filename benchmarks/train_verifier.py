"""An outcome verifier trained on the train families of the test-time-compute matrix, scored on
the eval families it never saw.

The matrix (`ttc_matrix.py`) leaves, per train-family task, 16 sampled answers with the checker's
verdict: thousands of labelled final answers at no extra cost. This fits `HeadReward`'s probe (a
ridge-logistic head on the policy's last-layer hidden state at the answer's last token; see
`search/head_reward.py`) on them, with label = solved (score 1), as an outcome reward model (the
Math-Shepherd label of a finished answer is its own check: `rollouts=0`). Nothing about the eval
families is read while fitting; the fitted head then scores every eval sample, written into the
eval rows as the verifier `trained`, so `ttc_matrix.py --summarize` reports its AUC and the
selectors built on it beside the others.

    .venv/bin/python benchmarks/train_verifier.py            # fit, save, score the eval rows
    .venv/bin/python benchmarks/ttc_matrix.py --summarize --chosen-sampling

The head is small (576 weights and a bias: a few KB) and is committed at
`benchmarks/results/ttc/outcome_head.pt`, so it loads without this script:
`HeadReward.load(backend, path)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from ttc_matrix import EVAL, RESULTS, SEED, TRAIN, _lines, messages
from ttc_stats import roc_auc

from agentic.core import ConfigError, Task
from agentic.runtime.suites import load_suite
from backends import TransformersBackend, load_backend
from search.head_reward import LabelledPrefix, train_head


def tasks_of(family_key: str, families: dict[str, Any], n: int) -> dict[str, Task]:
    f = families[family_key]
    return {t.id: t for t in load_suite(f.dataset, n=n, seed=SEED, config=f.config).tasks}


def row_files(out: Path, families: dict[str, Any]) -> list[Path]:
    return [p for p in sorted(out.glob("*/*.rows.jsonl")) if p.parent.name in families]


async def run(args: argparse.Namespace) -> None:
    backend = load_backend(args.backend)
    if not isinstance(backend, TransformersBackend):
        raise ConfigError("the trained verifier reads hidden states: use a local model")
    examples, seen = [], set()
    for path in row_files(args.out, TRAIN):
        rows = [json.loads(line) for line in _lines(path)]
        tasks = tasks_of(
            path.parent.name, TRAIN, max(int(r["task_id"].rsplit("/", 1)[1]) for r in rows) + 1
        )
        for r in rows:
            task = tasks[r["task_id"]]
            for s in r["samples"]:
                if (task.id, s["text"]) in seen or not s["text"]:
                    continue
                seen.add((task.id, s["text"]))
                label = 1.0 if s["score"] >= 1.0 else 0.0
                examples.append(
                    LabelledPrefix(
                        task_id=task.id, messages=messages(task), prefix=s["text"], step=1,
                        hard=label, soft=label, rollouts=0,
                    )
                )  # fmt: skip
    if not examples:
        raise ConfigError(f"no train rows under {args.out}: run ttc_matrix.py --split train")
    positives = sum(e.hard for e in examples)
    print(f"fitting on {len(examples)} distinct train answers ({positives:.0f} solved)", flush=True)
    reward = await train_head(backend, examples, layer=args.layer, l2=args.l2, epochs=args.epochs)
    reward.save(args.head)
    train_scores = reward.predict(
        (await reward.features([(e.messages, e.prefix) for e in examples]))[0]
    )
    train_auc = roc_auc(train_scores, [e.hard > 0 for e in examples])
    eval_scores: list[float] = []
    eval_labels: list[bool] = []
    for path in row_files(args.out, EVAL):
        rows = [json.loads(line) for line in _lines(path)]
        tasks = tasks_of(
            path.parent.name, EVAL, max(int(r["task_id"].rsplit("/", 1)[1]) for r in rows) + 1
        )
        for r in rows:
            scores = await reward.score(tasks[r["task_id"]], [[s["text"]] for s in r["samples"]])
            for s, [v] in zip(r["samples"], scores, strict=True):
                s["trained"] = v
                eval_scores.append(v)
                eval_labels.append(s["score"] >= 1.0)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, path)  # whole or not at all: a kill never leaves half a file
        print(f"scored {path.parent.name}/{path.name}", flush=True)
    report = {
        "examples": len(examples),
        "solved": positives,
        "layer": args.layer,
        "l2": args.l2,
        "train_auc": train_auc,
        "eval_auc": roc_auc(eval_scores, eval_labels) if eval_scores else None,
        "eval_samples": len(eval_scores),
    }
    (args.out / "outcome_head.metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    await backend.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="embedded:smollm2")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--head", type=Path, default=RESULTS / "outcome_head.pt")
    ap.add_argument("--layer", type=int, default=-1)
    ap.add_argument("--l2", type=float, default=1e-2)
    ap.add_argument("--epochs", type=int, default=300)
    args = ap.parse_args()
    try:
        asyncio.run(run(args))
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
