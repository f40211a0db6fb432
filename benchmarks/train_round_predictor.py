"""Train the `RoundPredictor` that picks PSR's round budget R per prompt, and report it.

Data: `benchmarks/data/safety_prompts.jsonl` (120 harmful, 120 benign requests written for this
repository, 34 of the benign ones edgy-looking, like "how do I kill a python process"); fixed
splits, 72 + 72 train, 48 + 48 test. Features: all-MiniLM-L6-v2 embeddings of the prompt
(`--embedder hashing` for the dependency-free lexical one).

Labels: harmful -> R (`--rounds`), benign -> 0. We do not label each prompt with the number of
backtracks PSR actually needed on SmolLM2, because that count comes from the model's own
reflection, which barely separates harmful from benign answers (ROC AUC 0.54 for the default
self-check prompt, see `--judge-auc`): such labels would mostly record the judge's noise.
The binary labels say what the predictor is for: R = 0 for benign prompts (they pay nothing),
the full budget where the request is harmful.

The L2 penalty is chosen by 4-fold cross-validation on the training split (`--l2` fixes it).
Reports held-out accuracy, per-class recall, the false-positive rate on the edgy benign prompts
(those are where over-refusal would come from) and per-category accuracy. With `--judge-auc`
it also measures how well SmolLM2's reflection p separates harmful from benign answers (greedy
24-token answers to the training prompts) for both `ReflectionPrompt` presets.

    .venv/bin/python benchmarks/train_round_predictor.py [--rounds 2] [--judge-auc]

Prints a table, saves the predictor to benchmarks/results/round_predictor.json and the metrics to
benchmarks/results/round_predictor.metrics.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from agentic.core import GenerateRequest, SamplingParams, Task
from controllers.harm_judge import SafetyPrompt, load_safety_prompts
from controllers.psr import JUDGE_QUESTION, SELF_CHECK, ProgressiveSelfReflection
from controllers.round_predictor import RoundPredictor
from memory.embedders import Embedder, HashingEmbedder, SentenceTransformerEmbedder

HERE = Path(__file__).parent
DATA = HERE / "data" / "safety_prompts.jsonl"
RESULTS = HERE / "results"
L2_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)


def auc(pos: list[float], neg: list[float]) -> float:
    """P(a positive scores above a negative), ties count half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def cross_validate(
    embedder: Embedder, x: npt.NDArray[np.float32], labels: list[int], l2: float, epochs: int
) -> float:
    """Mean accuracy over 4 folds (every 4th example held out in turn)."""
    idx = np.arange(len(labels))
    y = np.array(labels)
    accs = []
    for fold in range(4):
        held = idx % 4 == fold
        rp = RoundPredictor(embedder, l2=l2, epochs=epochs)
        rp.fit_embeddings(x[~held], [int(v) for v in y[~held]])
        classes = np.array(rp.classes)
        accs.append(float(np.mean(classes[rp.proba_embeddings(x[held]).argmax(1)] == y[held])))
    return float(np.mean(accs))


def evaluate(rows: list[SafetyPrompt], predicted: list[int]) -> dict[str, Any]:
    hits = [(r, (p > 0) == (r.label == "harmful")) for r, p in zip(rows, predicted, strict=True)]
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for r, ok in hits:
        by_cat[f"{r.label}/{r.category}"].append(ok)
    harmful = [ok for r, ok in hits if r.label == "harmful"]
    benign = [ok for r, ok in hits if r.label == "benign"]
    edgy = [ok for r, ok in hits if r.category == "edgy"]
    return {
        "n": len(hits),
        "accuracy": sum(ok for _, ok in hits) / len(hits),
        "harmful_recall": sum(harmful) / len(harmful),
        "benign_recall": sum(benign) / len(benign),
        "edgy_false_positive_rate": 1 - sum(edgy) / len(edgy) if edgy else None,
        "by_category": {k: sum(v) / len(v) for k, v in sorted(by_cat.items())},
        "mistakes": [r.prompt for r, ok in hits if not ok],
    }


async def judge_auc(train: list[SafetyPrompt]) -> dict[str, Any]:
    """How well SmolLM2's own reflection separates harmful from benign answers."""
    from backends import load_backend

    backend = load_backend("embedded:smollm2")
    params = SamplingParams(temperature=0.0, max_tokens=24)
    gens = await asyncio.gather(
        *(backend.generate([GenerateRequest.chat(r.prompt, **params.model_dump())]) for r in train)
    )
    out: dict[str, Any] = {"model": backend.name, "answer_tokens": params.max_tokens}
    for name, reflection in (("SELF_CHECK", SELF_CHECK), ("JUDGE_QUESTION", JUDGE_QUESTION)):
        psr = ProgressiveSelfReflection(backend, reflection=reflection, params=params)
        ps = []
        for r, g in zip(train, gens, strict=True):
            task = Task(id=r.id, input=r.prompt)
            p, _ = await psr.reflect(task, psr.messages(task), g[0][0].text)
            ps.append(p)
        pos = [p for p, r in zip(ps, train, strict=True) if r.label == "harmful"]
        neg = [p for p, r in zip(ps, train, strict=True) if r.label == "benign"]
        out[name] = {
            "auc": auc(pos, neg),
            "mean_p_harmful": sum(pos) / len(pos),
            "mean_p_benign": sum(neg) / len(neg),
        }
    await backend.aclose()
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = load_safety_prompts(args.data)
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    embedder: Embedder = (
        SentenceTransformerEmbedder() if args.embedder == "minilm" else HashingEmbedder()
    )
    t0 = time.monotonic()
    labels = [args.rounds if r.label == "harmful" else 0 for r in train]
    x = await embedder.embed([r.prompt for r in train])
    cv = {l2: cross_validate(embedder, x, labels, l2, args.epochs) for l2 in args.l2 or L2_GRID}
    l2 = max(cv, key=lambda k: (cv[k], k))  # ties go to the stronger penalty
    predictor = RoundPredictor(embedder, l2=l2, epochs=args.epochs).fit_embeddings(
        x,
        labels,
        metadata={"labels": "harmful -> R, benign -> 0", "data": DATA.name, "l2": l2},
    )
    t1 = time.monotonic()
    splits = {
        name: evaluate(part, await predictor.predict_many([r.prompt for r in part]))
        for name, part in (("train", train), ("test", test))
    }
    t2 = time.monotonic()
    result: dict[str, Any] = {
        "embedder": embedder.name,
        "rounds": args.rounds,
        "labels": "harmful -> R, benign -> 0",
        "l2": l2,
        "cv_accuracy": {str(k): v for k, v in cv.items()},
        "splits": splits,
        "seconds": {"load_and_fit": t1 - t0, "predict": t2 - t1},
        "machine": {"platform": platform.platform()},
    }
    if args.judge_auc:
        result["judge_auc"] = await judge_auc(train)
        result["seconds"]["judge_auc"] = time.monotonic() - t2
    predictor.save(args.out)
    return result


def fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--rounds", type=int, default=2, help="R given to harmful prompts")
    p.add_argument("--embedder", choices=("minilm", "hashing"), default="minilm")
    p.add_argument("--epochs", type=int, default=2000)
    p.add_argument("--l2", type=float, action="append", help="penalties to try (default: a grid)")
    p.add_argument("--judge-auc", action="store_true", help="also measure SmolLM2's reflection")
    p.add_argument("--out", type=Path, default=RESULTS / "round_predictor.json")
    args = p.parse_args()

    result = asyncio.run(run(args))
    console = Console(width=120)
    cv = ", ".join(f"{k}: {v:.3f}" for k, v in result["cv_accuracy"].items())
    console.print(f"4-fold CV accuracy by l2 on the training split: {cv}; chose {result['l2']}")
    table = Table(title=f"RoundPredictor on {result['embedder']}, R = {args.rounds}")
    cols = {
        "n": "prompts",
        "accuracy": "accuracy",
        "harmful_recall": "harmful -> R",
        "benign_recall": "benign -> 0",
        "edgy_false_positive_rate": "edgy -> R",
    }
    table.add_column("split")
    for title in cols.values():
        table.add_column(title, justify="right")
    for name, m in result["splits"].items():
        table.add_row(name, *(str(m[c]) if c == "n" else fmt(m[c]) for c in cols))
    console.print(table)
    for prompt in result["splits"]["test"]["mistakes"]:
        console.print(f"  test mistake: {prompt}")
    if "judge_auc" in result:
        for name in ("SELF_CHECK", "JUDGE_QUESTION"):
            j = result["judge_auc"][name]
            console.print(
                f"SmolLM2 reflection {name}: AUC {j['auc']:.3f}, mean p harmful "
                f"{j['mean_p_harmful']:.3f} vs benign {j['mean_p_benign']:.3f}"
            )
    metrics = args.out.with_suffix(".metrics.json")
    metrics.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out} and {metrics}")


if __name__ == "__main__":
    main()
