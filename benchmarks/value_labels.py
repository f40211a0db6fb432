"""Math-Shepherd step labels for the trained value model, over the matrix's families.

Per task, `--samples` solutions are sampled step by step as the search controllers step (the
matrix's chat, steps split at blank lines; 16-token steps, at most 4, `LABEL_*`, the search
default when the shipped model was trained; T=1.0 / min_p 0.1, the sampling chosen on the train
families); every unfinished prefix is rolled out `--rollouts` times to the end and checked by
the suite (soft label = fraction correct); a finished answer is checked directly
(`search.head_reward.collect_labels`).

`--split train` labels the TRAIN families: the value model is fit on these and nothing else.
`--split eval` labels the EVAL families with the same recipe, only to *measure* the verifiers'
held-out ROC AUC on step prefixes; no fit or choice reads them.

Resumable and cached: each finished task is one JSON line in `<out>/<split>/<family>.jsonl`
(its labelled prefixes); a rerun skips the tasks already there.

    .venv/bin/python benchmarks/value_labels.py --split train --tasks 24
    .venv/bin/python benchmarks/value_labels.py --split eval --tasks 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from ttc_matrix import DEFAULT_SAMPLING, EVAL, RESULTS, SEED, TRAIN, Family, _lines

from agentic.core import ConfigError, Task
from agentic.runtime.suites import load_suite
from backends import TransformersBackend, load_backend
from search.base import StepGenerator
from search.head_reward import LabelledPrefix, collect_labels

LABELS = RESULTS / "value_labels"
# The steps the shipped value model's labels were made with. Pinned rather than read from the
# search default (2 steps of 32 tokens since the train-family sweep): shorter steps give each
# answer more unfinished prefixes to label, and a rerun must make the labels the artifact was
# trained on.
LABEL_TOKENS_PER_STEP, LABEL_MAX_STEPS = 16, 4


def read_labels(path: Path) -> list[LabelledPrefix]:
    """Every labelled prefix in a labels file (one task per line)."""
    return [
        LabelledPrefix.model_validate(p)
        for line in _lines(path)
        for p in json.loads(line)["prefixes"]
    ]


def label_files(out: Path, split: str) -> list[Path]:
    families = TRAIN if split == "train" else EVAL
    return [p for p in sorted((out / split).glob("*.jsonl")) if p.stem in families]


async def label_family(
    backend: TransformersBackend, family: Family, path: Path, args: argparse.Namespace
) -> None:
    suite = load_suite(family.dataset, n=args.tasks, seed=SEED, config=family.config)
    steps = StepGenerator(
        backend,
        tokens_per_step=LABEL_TOKENS_PER_STEP,
        max_steps=LABEL_MAX_STEPS,
        temperature=DEFAULT_SAMPLING["temperature"],
        min_p=DEFAULT_SAMPLING["min_p"],
        top_p=DEFAULT_SAMPLING["top_p"],
    )
    done = {json.loads(line)["task_id"] for line in _lines(path)}
    todo = [(i, t) for i, t in enumerate(suite.tasks) if t.id not in done]
    for start in range(0, len(todo), args.concurrency):
        batch = todo[start : start + args.concurrency]
        t0 = time.perf_counter()

        async def one(i: int, task_: Task) -> list[LabelledPrefix]:
            return await collect_labels(
                backend, suite, steps, rollouts=args.rollouts, tasks=[task_],
                samples=args.samples, seed=SEED * 1000 + i,
            )  # fmt: skip

        per_task = await asyncio.gather(*(one(i, t) for i, t in batch))
        with path.open("a") as f:
            for (_, task), labels in zip(batch, per_task, strict=True):
                prefixes = [p.model_dump(mode="json") for p in labels]
                f.write(json.dumps({"task_id": task.id, "prefixes": prefixes}) + "\n")
        n = len(done) + start + len(batch)
        print(f"{family.key}: {n}/{args.tasks} tasks ({time.perf_counter() - t0:.0f}s)", flush=True)


async def run(args: argparse.Namespace) -> None:
    backend = load_backend(args.backend)
    if not isinstance(backend, TransformersBackend):
        raise ConfigError("labels roll out on a local model: use an hf: or embedded: backend")
    families = TRAIN if args.split == "train" else EVAL
    (args.out / args.split).mkdir(parents=True, exist_ok=True)
    for key, family in families.items():
        await label_family(backend, family, args.out / args.split / f"{key}.jsonl", args)
    await backend.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="embedded:smollm2")
    ap.add_argument("--split", choices=("train", "eval"), required=True)
    ap.add_argument("--tasks", type=int, default=24, help="tasks per family")
    ap.add_argument("--samples", type=int, default=4, help="solutions per task")
    ap.add_argument("--rollouts", type=int, default=4, help="completions per unfinished prefix")
    ap.add_argument("--concurrency", type=int, default=4, help="tasks labelled side by side")
    ap.add_argument("--out", type=Path, default=LABELS)
    args = ap.parse_args()
    try:
        asyncio.run(run(args))
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
